"""Cross-validated quality of every search system on the shipped MS MARCO / TREC DL 2019 subset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_quality.py --folds 0,1,2 \
        --part a.json [--set train.llm_teacher={}] &     # and --folds 3,4 --part b.json
    .venv/bin/python benchmarks/search/bench_quality.py --combine a.json b.json

Runs ``winnow search train`` with ``configs/search/msmarco.yaml`` (5 folds over the 43 judged
queries; each query is reranked by models that never saw its labels, settings chosen on each
fold's inner split; the final models are saved in ``train.output_dir``), then adds:

- ``dense_top30_shuffled``: the dense top 30 in random order (mean of 50 seeded shuffles per
  query), what a reranker that learnt nothing scores;
- ``llm_teacher_gpu`` and ``llm_teacher_cpu``: ``llm_teacher`` / ``llm_zero_shot`` from
  ``benchmarks/results/search_llm_teacher_gpu.json`` and ``search_llm_teacher.json``
  (``bench_llm_teacher.py`` on a GPU and on this CPU) for the folds each finished: compared with
  dense on those folds' queries only, and only when its folds are this config's folds.

With ``--set train.llm_teacher={}`` (and its ``cv.choices``) the SmolLM2 teacher is one more
cross-validated system, ``llm_teacher``, and a candidate for ``best_teacher``.

Writes ``benchmarks/results/search_quality.json`` whose ``summary`` holds ``cv_ndcg10``
(system -> pooled nDCG@10), ``cv_ci_vs_dense`` (system -> [difference, low, high]),
``best_teacher``, ``teacher_minus_dense_cv``, ``student_over_teacher_cv`` (the served student
``student_both+int8`` over the best teacher), ``folds`` and ``queries``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from winnow.common.config import load_config
from winnow.common.runs import atomic_write_text
from winnow.search.config import SearchConfig
from winnow.search.metrics import cross_validated, evaluate_run, run_from_arrays
from winnow.search.training import METRICS, prepare_training

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "search" / "msmarco.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "search_quality.json"
LLM_RESULTS = {
    "llm_teacher_gpu": ROOT / "benchmarks" / "results" / "search_llm_teacher_gpu.json",
    "llm_teacher_cpu": ROOT / "benchmarks" / "results" / "search_llm_teacher.json",
}
SERVED = "student_both+int8"
TEACHERS = ("relevance_teacher", "engagement_teacher", "llm_teacher")
PER_FOLD = ("fold_queries", "chosen", "train_seconds", "items_per_s")


def shuffled_ndcg(qrels, dense: dict, depth: int, draws: int = 50) -> dict[str, float]:
    """Per query, the mean nDCG@10 of the dense top ``depth`` in random order."""
    rng = np.random.default_rng(0)
    query_ids = sorted(dense)
    values = {qid: [] for qid in query_ids}
    for _ in range(draws):
        ids = np.array([rng.permutation(dense[q][:depth]) for q in query_ids])
        found = evaluate_run(qrels, run_from_arrays(query_ids, ids), ("ndcg@10",))
        for qid in query_ids:
            values[qid].append(found.per_query["ndcg@10"][qid])
    return {qid: float(np.mean(v)) for qid, v in values.items()}


def llm_comparison(path: Path, qrels, summary: dict, rankings_dense: dict) -> dict | None:
    """The LLM teacher of ``path`` on the folds it finished, against dense on the same queries."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    ours = [sorted(fold["test"]) for fold in summary["fold_queries"]]
    done = [sorted(fold["test"]) for fold in record["folds"]]
    if any(fold not in ours for fold in done):
        return {"skipped": "its folds are not this config's folds"}
    runs = {"dense": rankings_dense, **record["rankings"]}
    found = cross_validated(qrels, runs, done, ("ndcg@10",), resamples=10_000)
    return {
        "folds_done": len(done),
        "queries": len(found.query_ids),
        "ndcg10": found.pooled,
        "ci_vs_dense": {
            name: [round(v, 4) for v in (gap["difference"], gap["low"], gap["high"])]
            for name, values in found.versus.items()
            for gap in [values["ndcg@10"]]
        },
        "device": record["machine"],
        "settings": record["settings"],
        "fold_records": record["folds"],
    }


def run_folds(config: SearchConfig, indices: list[int], out: Path) -> None:
    """Cross-validate the folds ``indices`` and write their held-out rankings to ``out``,
    rewritten after each fold (a stopped run keeps the folds it finished)."""
    from winnow.search.crossval import cross_validate
    from winnow.search.folds import make_folds
    from winnow.search.training import fold_rankers

    training = prepare_training(config, quiet=True)
    cv = config.train.cv
    folds = make_folds(training.data.judged_query_ids, cv.folds, cv.inner_fraction, config.seed)
    record = {key: [] for key in ("folds", *PER_FOLD)} | {"rankings": {}}
    for index in indices:
        rankings, (result,) = cross_validate(config, training, [folds[index]], fold_rankers, True)
        for name, ranked in rankings.items():
            record["rankings"].setdefault(name, {}).update(ranked)
        record["folds"].append(index)
        record["fold_queries"].append(
            {"fit": result.fold.fit, "inner": result.fold.inner, "test": result.fold.test}
        )
        record["chosen"].append(result.chosen)
        record["train_seconds"].append(round(result.train_seconds, 1))
        record["items_per_s"].append(result.items_per_s)
        atomic_write_text(out, json.dumps(record) + "\n")


def combine(config: SearchConfig, parts: list[Path], threads: int) -> dict:
    """Pool the parts' rankings over all folds into ``search_quality.json``."""
    records = [json.loads(part.read_text()) for part in parts]
    entries = sorted(
        (
            (index, {key: record[key][position] for key in PER_FOLD})
            for record in records
            for position, index in enumerate(record["folds"])
        ),
        key=lambda entry: entry[0],
    )
    if [index for index, _ in entries] != list(range(config.train.cv.folds)):
        raise SystemExit(f"parts cover folds {[i for i, _ in entries]}, not all folds")
    per_fold = [entry for _, entry in entries]
    rankings: dict = {}
    for record in records:
        for name, ranked in record["rankings"].items():
            rankings.setdefault(name, {}).update(ranked)
    training = prepare_training(config, quiet=True)
    data = training.data
    tests = [entry["fold_queries"]["test"] for entry in per_fold]
    scores = cross_validated(
        data.qrels,
        rankings,
        tests,
        METRICS,
        resamples=config.train.cv.bootstrap_resamples,
        seed=config.seed,
    )
    dense = {q: [d for d in training.candidates[q] if d] for q in data.judged_query_ids}
    shuffled = shuffled_ndcg(data.qrels, dense, config.train.candidates)
    pooled = {name: values["ndcg@10"] for name, values in scores.pooled.items()}
    pooled["dense_top30_shuffled"] = float(np.mean(list(shuffled.values())))
    intervals = {
        name: [round(values["ndcg@10"][k], 4) for k in ("difference", "low", "high")]
        for name, values in scores.versus.items()
    }
    best = max((name for name in TEACHERS if name in pooled), key=lambda name: pooled[name])
    summary = {
        "cv_ndcg10": {name: round(value, 4) for name, value in pooled.items()},
        "cv_ci_vs_dense": intervals,
        "best_teacher": best,
        "teacher_minus_dense_cv": round(pooled[best] - pooled["dense"], 4),
        "student_over_teacher_cv": round(pooled[SERVED] / pooled[best], 4),
        "served_student": SERVED,
        "served_student_minus_dense_cv": round(pooled[SERVED] - pooled["dense"], 4),
        "folds": len(tests),
        "queries": len(scores.query_ids),
        "goals": {
            "best_teacher_ge_dense_plus_0.02": pooled[best] >= pooled["dense"] + 0.02,
            "served_ge_0.95_teacher_and_ge_dense": pooled[SERVED] >= 0.95 * pooled[best]
            and pooled[SERVED] >= pooled["dense"],
        },
    }
    return {
        "summary": summary,
        "metrics": scores.pooled,
        "per_fold_ndcg10": {name: v["ndcg@10"] for name, v in scores.per_fold.items()},
        "chosen_per_fold": [entry["chosen"] for entry in per_fold],
        "train_seconds_per_fold": [entry["train_seconds"] for entry in per_fold],
        "rerank_items_per_s_per_fold": [entry["items_per_s"] for entry in per_fold],
        **{
            name: llm_comparison(
                path, data.qrels, {"fold_queries": [e["fold_queries"] for e in per_fold]}, dense
            )
            for name, path in LLM_RESULTS.items()
        },
        "config": config.model_dump(mode="json"),
        "metrics_reported": list(METRICS),
        "machine": {"platform": platform.platform(), "threads": threads, "processes": len(parts)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", default=None, help="e.g. 0,1,2: run these folds into --part")
    parser.add_argument("--part", type=Path, default=None, help="rankings of --folds (JSON)")
    parser.add_argument("--combine", type=Path, nargs="*", default=None, help="part files")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    config = load_config(SearchConfig, CONFIG, overrides=args.set)
    config.train.num_threads = args.threads
    if args.folds is not None:
        run_folds(config, [int(i) for i in args.folds.split(",")], args.part)
        return
    result = combine(config, args.combine, args.threads)
    atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
