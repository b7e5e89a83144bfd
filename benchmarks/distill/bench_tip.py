"""TIP reproduction on 3-digit addition: every token selector at equal steps, over seeds.

The teacher and the weak student come from ``winnow distill sft`` with
configs/distill/sft_arith.yaml (trained once, seed 0, unless --models points at a pair). Each
seed then trains every arm of configs/distill/tip_selectors.yaml from that same student: the
seed changes the prompts drawn, the rollouts and the random selectors. Accuracy is greedy on
the same 256 held-out problems for every arm and seed.

    .venv/bin/python benchmarks/distill/bench_tip.py [--seeds 3] [--steps 300] [--quick]

Writes benchmarks/results/distill_tip.json (``summary``: arm -> mean, sd, seeds, kept
fraction) and benchmarks/results/distill_tip.png (final accuracy per arm, one dot per seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from winnow.common.config import load_config
from winnow.common.runs import RunDir, atomic_path, atomic_write_text
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.jobs import train_section
from winnow.distill.sft_job import run_sft

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def make_models(folder: Path) -> dict:
    """SFT the teacher/student pair into ``folder``; returns the SFT run's summary."""
    config = load_config(
        SftConfig, ROOT / "configs/distill/sft_arith.yaml", [f"output_dir={folder}"]
    )
    report = run_sft(config, root=folder / "runs", quiet=True)
    return json.loads((report.parent / "metrics.json").read_text())["summary"]


def arm_rows(section_summary: dict, seed: int) -> list[dict]:
    return [{"seed": seed, "arm": arm, **values} for arm, values in section_summary.items()]


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for arm in dict.fromkeys(row["arm"] for row in rows):
        mine = [row for row in rows if row["arm"] == arm]
        final = np.array([row["final accuracy"] for row in mine])
        summary[arm] = {
            "mean": float(final.mean()),
            "sd": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "seeds": len(final),
            "best_mean": float(np.mean([row["best accuracy"] for row in mine])),
            "kept_fraction": float(np.mean([row["mean kept fraction"] for row in mine])),
            "kept_in_q3": float(np.mean([row["kept in Q3"] for row in mine])),
        }
    return summary


def plot(rows: list[dict], summary: dict, start: float):
    import matplotlib.pyplot as plt

    arms = list(summary)
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for i, arm in enumerate(arms):
        finals = [row["final accuracy"] for row in rows if row["arm"] == arm]
        axis.scatter([i] * len(finals), finals, s=18, color="#1f77b4", alpha=0.7)
        axis.errorbar(
            i, summary[arm]["mean"], yerr=summary[arm]["sd"], fmt="_", color="k", capsize=4
        )
    axis.axhline(start, color="grey", linestyle=":", label="student before OPD")
    axis.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
    axis.set(ylabel="held-out accuracy after OPD", ylim=(-0.02, 1.02))
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", type=Path, help="folder with teacher/ and student/")
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 steps, smoke test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    steps = 30 if args.quick else args.steps
    scratch = Path(tempfile.mkdtemp(prefix="bench-tip-"))
    models = args.models or scratch / "models"
    started = time.perf_counter()
    sft = make_models(models) if args.models is None else {}
    rows, start_accuracy = [], None
    for seed in seeds:
        config = load_config(
            TrainConfig,
            ROOT / "configs/distill/tip_selectors.yaml",
            [
                f"seed={seed}",
                f"steps={steps}",
                f"student.path={models / 'student'}",
                f"teacher.path={models / 'teacher'}",
            ],
        )
        run = RunDir(f"tip-seed{seed}", root=scratch / "runs", seed=seed)
        section = train_section(config, run, quiet=False)
        rows += arm_rows(section.summary, seed)
        start_accuracy = rows[-1]["start accuracy"]
        print(f"seed {seed} done after {time.perf_counter() - started:.0f} s", flush=True)
    summary = summarise(rows)
    payload = {
        "benchmark": "distill_tip",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            "seeds": len(seeds),
            "steps": steps,
            "train_config": "configs/distill/tip_selectors.yaml",
            "sft_config": "configs/distill/sft_arith.yaml",
            "sft": sft,
            "student_accuracy_before": start_accuracy,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, summary, start_accuracy)
    with atomic_path(RESULTS / "distill_tip.png") as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    atomic_write_text(RESULTS / "distill_tip.json", json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
