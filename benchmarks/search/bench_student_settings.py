"""Student learning rate, epochs and distillation temperature, judged on the dev queries only.

For each setting, ``student_both`` (teacher weights relevance 1, engagement 0.5) is distilled
from the saved teachers on the same lists as ``winnow search train`` and scored on the 9 dev
queries: nDCG@10 of its rerank of the dense top 30, and its fidelity to the relevance teacher
(mean Kendall tau between their scores per dev query). Test queries are never read.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_student_settings.py \
        [--settings 1e-4,4,1 5e-4,4,1 5e-4,8,1 5e-4,8,0.5]

``--settings`` are ``learning_rate,epochs,temperature``. Needs the teachers of ``winnow search
train`` in ``train.output_dir`` (trains them first if absent, about 15 min). Writes
benchmarks/results/search_student_settings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from winnow.common.config import load_config
from winnow.common.runs import atomic_write_text
from winnow.search.config import SearchConfig
from winnow.search.ranker import precompute_teacher_scores
from winnow.search.reranking import load_rankers
from winnow.search.training import (
    distillation_lists,
    evaluate_rerankers,
    prepare_training,
    run_search_train,
    train_students,
    unlabelled_lists,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "search" / "msmarco.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "search_student_settings.json"
TEACHERS = ("relevance_teacher", "engagement_teacher")


def teachers_of(config: SearchConfig, quiet: bool) -> dict:
    """The saved teachers by role, trained first when ``train.output_dir`` lacks them."""
    saved = load_rankers(config.train.output_dir, num_threads=1)
    if not all(name in saved for name in TEACHERS):
        run_search_train(config, quiet=quiet)
        saved = load_rankers(config.train.output_dir, num_threads=1)
    return {name.removesuffix("_teacher"): saved[name].scorer for name in TEACHERS}


def evaluate_setting(config, training, lists, scores, dev_lists, dev_teacher, setting, quiet):
    """Distil one ``student_both`` with ``setting`` and score it on the dev queries."""
    learning_rate, epochs, temperature = setting
    trial = config.model_copy(deep=True)
    trial.train.student.learning_rate = learning_rate
    trial.train.student.epochs = epochs
    trial.train.student.temperature = temperature
    trial.train.students = {"both": config.train.students["both"]}
    start = time.perf_counter()
    student = train_students(trial, lists, scores, quiet)["both"]
    taus = [
        kendalltau(student.score(entry.query, entry.docs), teacher).statistic
        for entry, teacher in zip(dev_lists, dev_teacher, strict=True)
    ]
    dev = {"dev": training.split.dev}
    found, _ = evaluate_rerankers(training, {"student": student}, dev, config.train.candidates)
    return {
        "learning_rate": learning_rate,
        "epochs": epochs,
        "temperature": temperature,
        "dev_ndcg10": round(found["dev"]["student"].mean["ndcg@10"], 4),
        "dev_kendall_tau_vs_relevance_teacher": round(float(np.mean(taus)), 4),
        "loss_first_20_steps": round(float(np.mean(student.history_[:20])), 4),
        "loss_last_20_steps": round(float(np.mean(student.history_[-20:])), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def parse_setting(text: str) -> tuple[float, int, float]:
    learning_rate, epochs, temperature = text.split(",")
    return float(learning_rate), int(epochs), float(temperature)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument(
        "--settings",
        nargs="+",
        type=parse_setting,
        default=[(1e-4, 4, 1.0), (5e-4, 4, 1.0), (5e-4, 8, 1.0), (5e-4, 8, 0.5)],
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    config = load_config(SearchConfig, args.config)
    teachers = teachers_of(config, args.quiet)
    training = prepare_training(config, args.quiet)
    lists = distillation_lists(config, training)
    scores = precompute_teacher_scores(teachers, lists)
    dev_lists = unlabelled_lists(training, training.split.dev)
    dev_teacher = precompute_teacher_scores({"r": teachers["relevance"]}, dev_lists)["r"]
    rows = [
        evaluate_setting(
            config, training, lists, scores, dev_lists, dev_teacher, setting, args.quiet
        )
        for setting in args.settings
    ]
    best = max(rows, key=lambda row: row["dev_ndcg10"])
    record = {
        "summary": {
            "dev_queries": len(training.split.dev),
            "rows": rows,
            "best_dev_ndcg10": best,
            "config_default": {
                "learning_rate": config.train.student.learning_rate,
                "epochs": config.train.student.epochs,
                "temperature": config.train.student.temperature,
            },
        },
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "torch_threads": 1},
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
