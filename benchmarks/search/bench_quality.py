"""nDCG@10 on held-out queries: first stages, both teachers, the student ablations and the
student serving stack, in one run over the shipped MS MARCO / TREC DL 2019 subset.

    OMP_NUM_THREADS=1 .venv/bin/winnow search train --config configs/search/msmarco.yaml
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_quality.py \
        [--models models/search] [--summary-tokens 48] [--no-summary-student]

Systems (every reranker reorders the dense top ``train.candidates`` = 30):

- ``bm25``, ``dense``, ``hybrid_rrf``, ``hybrid_interpolate``: first stages (depth 100);
- ``relevance_teacher``, ``engagement_teacher``: 6-layer cross-encoders from ``winnow search
  train`` (the engagement teacher learns from SIMULATED clicks);
- ``student_relevance_only``, ``student_engagement_only``, ``student_both``: 2-layer, 96 word
  pieces, distilled with those teacher weights;
- the serving stack of ``student_both``: ``+int8`` (dynamic int8), ``+summaries`` (served on
  query-independent extractive summaries of ``--summary-tokens`` word pieces), both, and
  ``student_both_on_summaries``: the same distillation with the student reading summaries in
  training too (teacher scores still on full text), served int8 on summaries = the student
  stack of ``bench_throughput.py``.

Models come from ``--models`` (default ``train.output_dir``); when the relevance teacher or
``student_both`` is missing there, the script runs ``winnow search train`` first (about 15 min).
Reported on the 8 test queries (``summary.ndcg10``) and, less noisy, on the 17 held-out dev +
test queries (``summary.ndcg10_heldout``); nothing was tuned on either. The same table on the
26 training queries (``summary.ndcg10_train_queries``) shows how well the rerankers fit what
they were trained on. ``dense_top30_shuffled`` is the mean of 50 seeded random orders of the
dense top 30: what a reranker that learnt nothing scores. Writes
benchmarks/results/search_quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from winnow.common.config import load_config
from winnow.common.runs import atomic_write_text
from winnow.search.config import SearchConfig
from winnow.search.metrics import evaluate_run, paired_bootstrap, run_from_arrays
from winnow.search.ranker import precompute_teacher_scores
from winnow.search.reranking import load_rankers
from winnow.search.stack import quantize_int8, word_piece_counter
from winnow.search.summaries import summarize
from winnow.search.training import (
    TrainingData,
    distillation_lists,
    evaluate_rerankers,
    prepare_training,
    run_search_train,
    train_students,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "search" / "msmarco.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "search_quality.json"
METRICS = ("ndcg@10", "mrr@10", "recall@100")
TEACHER = "relevance_teacher"
STUDENT = "student_both"


def first_stage_quality(training: TrainingData, parts: dict[str, list[str]]) -> dict:
    """``{part: {system: Evaluation}}`` of BM25, dense and the hybrids at depth 100."""
    data = training.data
    results = {part: {} for part in parts}
    for name, retriever in training.stage.retrievers.items():
        for part, query_ids in parts.items():
            ids, _ = retriever.search([data.query_text(q) for q in query_ids], 100)
            results[part][name] = evaluate_run(data.qrels, run_from_arrays(query_ids, ids), METRICS)
    return results


def shuffled_baseline(training: TrainingData, parts: dict, depth: int, draws: int = 50) -> dict:
    """``{part: {metric: mean}}`` of the dense top ``depth`` in random order (mean of ``draws``
    seeded shuffles): what a reranker that learnt nothing scores."""
    data = training.data
    out = {}
    for part, query_ids in parts.items():
        head = training.run_of(query_ids)[:, :depth]
        rng = np.random.default_rng(0)
        means = [
            evaluate_run(
                data.qrels, run_from_arrays(query_ids, rng.permuted(head, axis=1)), METRICS[:2]
            ).mean
            for _ in range(draws)
        ]
        out[part] = {m: float(np.mean([row[m] for row in means])) for m in METRICS[:2]}
    return out


def summarised(training: TrainingData, tokens: int, counter) -> TrainingData:
    """The same training data with every passage replaced by its extractive summary."""
    data = training.data
    texts = summarize(data.passages, tokens, counter)
    blank = [""] * len(texts)
    return dataclasses.replace(
        training, data=dataclasses.replace(data, doc_titles=blank, doc_texts=texts)
    )


def summary_student(config: SearchConfig, training, on_summaries, teachers, quiet: bool):
    """``student_both`` distilled again, reading summaries; teacher scores stay on full text."""
    full_lists = distillation_lists(config, training)
    scores = precompute_teacher_scores(teachers, full_lists)
    short_lists = distillation_lists(config, on_summaries)
    single = config.model_copy(deep=True)
    single.train.students = {"both": config.train.students["both"]}
    return train_students(single, short_lists, scores, quiet)["both"]


def differences(heldout: dict, stack: str) -> dict:
    """Paired bootstrap of nDCG@10 differences over the held-out queries (95% intervals)."""
    pairs = {
        "student_stack_minus_teacher": (stack, TEACHER),
        "student_minus_teacher": (STUDENT, TEACHER),
        "teacher_minus_dense": (TEACHER, "dense"),
        "student_stack_minus_dense": (stack, "dense"),
    }
    return {
        label: {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in paired_bootstrap(
                heldout[a].per_query["ndcg@10"], heldout[b].per_query["ndcg@10"]
            ).items()
        }
        for label, (a, b) in pairs.items()
    }


def saved_rankers(config: SearchConfig, models: Path, quiet: bool) -> dict:
    """The rankers saved in ``models``, after training them there if the two compared lack."""
    saved = load_rankers(models, num_threads=1)
    if TEACHER not in saved or STUDENT not in saved:
        print(f"{models} lacks {TEACHER} or {STUDENT}: training them (winnow search train)")
        config.train.output_dir = str(models)
        run_search_train(config, quiet=quiet)
        saved = load_rankers(models, num_threads=1)
    return saved


def reranker_quality(config, training, saved: dict, parts: dict, args) -> tuple:
    """``({part: {system: Evaluation}}, timings, seconds)`` of every saved ranker on full text
    and of the student's serving variants (int8, summaries, distilled on summaries)."""
    depth = config.train.candidates
    rankers = {name: ranker.scorer for name, ranker in saved.items()}
    student = rankers[STUDENT]
    rankers[f"{STUDENT}+int8"] = quantize_int8(student)
    full, timings = evaluate_rerankers(training, rankers, parts, depth)
    on_summaries = summarised(training, args.summary_tokens, word_piece_counter(student))
    served_short = {
        f"{STUDENT}+summaries": student,
        f"{STUDENT}+summaries+int8": rankers[f"{STUDENT}+int8"],
    }
    seconds = {"distill_on_summaries": 0.0}
    if not args.no_summary_student:
        start = time.perf_counter()
        teachers = {"relevance": rankers[TEACHER], "engagement": rankers["engagement_teacher"]}
        trained = summary_student(config, training, on_summaries, teachers, args.quiet)
        seconds["distill_on_summaries"] = round(time.perf_counter() - start, 1)
        served_short[f"{STUDENT}_on_summaries+int8"] = quantize_int8(trained)
    short, short_timings = evaluate_rerankers(on_summaries, served_short, parts, depth)
    results = {
        part: {
            k: v for found in (full[part], short[part]) for k, v in found.items() if k != "dense"
        }
        for part in parts
    }
    return results, {**timings, **short_timings}, seconds


def quality_summary(config, training, results: dict, parts: dict) -> dict:
    """nDCG@10 per system and part (with the shuffled baseline), the student/teacher ratios and
    the paired bootstrap differences."""
    depth = config.train.candidates
    shuffled = shuffled_baseline(training, parts, depth)

    def ndcg(part: str) -> dict[str, float]:
        values = {name: round(found.mean["ndcg@10"], 4) for name, found in results[part].items()}
        return {**values, f"dense_top{depth}_shuffled": round(shuffled[part]["ndcg@10"], 4)}

    stack = f"{STUDENT}_on_summaries+int8"
    if stack not in results["test"]:
        stack = f"{STUDENT}+summaries+int8"
    test, heldout, train = ndcg("test"), ndcg("heldout"), ndcg("train")
    return {
        "ndcg10": test,
        "ndcg10_heldout": heldout,
        "ndcg10_train_queries": train,
        "teacher": TEACHER,
        "student": STUDENT,
        "student_stack": stack,
        "ndcg10_student_over_teacher": round(test[stack] / test[TEACHER], 4),
        "ndcg10_student_over_teacher_heldout": round(heldout[stack] / heldout[TEACHER], 4),
        "ndcg10_student_full_text_over_teacher": round(test[STUDENT] / test[TEACHER], 4),
        "heldout_paired_differences": differences(results["heldout"], stack),
        "goal_ratio": 0.95,
        "queries": {part: len(ids) for part, ids in parts.items()},
        "simulated_clicks": config.train.clicks.log is None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--models", type=Path, default=None, help="default: train.output_dir")
    parser.add_argument("--summary-tokens", type=int, default=48)
    parser.add_argument("--no-summary-student", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    began = time.perf_counter()
    config = load_config(SearchConfig, args.config)
    models = args.models or Path(config.train.output_dir)
    saved = saved_rankers(config, models, args.quiet)
    training = prepare_training(config, args.quiet)
    split = training.split
    parts = {"test": split.test, "heldout": split.dev + split.test, "train": split.train}
    results = first_stage_quality(training, parts)
    reranked, timings, seconds = reranker_quality(config, training, saved, parts, args)
    for part in parts:
        results[part].update(reranked[part])
    summary = quality_summary(config, training, results, parts)
    record = {
        "summary": summary,
        "results": {
            part: {name: found.mean for name, found in rows.items()}
            for part, rows in results.items()
        },
        "rerank_items_per_s": {name: round(t.items_per_s, 1) for name, t in timings.items()},
        "rankers": {name: ranker.describe() for name, ranker in saved.items()},
        "settings": {
            "config": str(args.config),
            "models": str(models),
            "candidates": config.train.candidates,
            "summary_tokens": args.summary_tokens,
            "split_seed": config.seed,
            "torch_threads": 1,
        },
        "seconds": {**seconds, "total": round(time.perf_counter() - began, 1)},
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
