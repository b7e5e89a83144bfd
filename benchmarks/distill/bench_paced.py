"""Paced vs uniform on-policy distillation on a mixed-difficulty pool, at equal steps and rollouts.

The teacher/student pair comes from ``winnow distill sft`` with configs/distill/sft_mixed.yaml
(addition with 1-3 digit operands, zero-padded to 3 digits; teacher 100% on every digit count,
student 100% on 1-2 digits and 19% on 3). Each seed trains three arms from that student with
configs/distill/paced.yaml, all with the same prompts per step x rollouts per prompt (16 x 4),
the same steps and learning rate:

- ``uniform``: every rollout weighted 1 (pacing null), forward KL throughout;
- ``paced``: w(p) = p (1 - p) of each problem's pass rate over its rollouts (normalised to mean
  1 over the problems that train; p = 0 or 1 never reaches the teacher), forward KL throughout;
- ``paced_fwd_rev``: the same weights, forward KL for the first half of the steps, reverse after.

Accuracy is greedy on the trainer's held-out problems (every digit count) and per digit count;
forgetting is the change of greedy accuracy on a separate held-out easy set (1-2 digits).
The paced arms log the share of rollouts that never reach the teacher.

    .venv/bin/python benchmarks/distill/bench_paced.py --models models/mixed
        [--student partial=models/mixed_partial/student] [--seeds 5] [--steps 200] [--quick]

The student of ``--models`` is called ``weak``; each ``--student NAME=PATH`` (e.g. the one of
configs/distill/sft_mixed_partial.yaml) runs every arm and seed again from that student, with
the same teacher. Writes benchmarks/results/distill_paced.json (``summary``: student -> arm ->
final accuracy, per-digit accuracy, easy-set change and teacher rollouts saved, each as mean,
sd, seeds; ``before`` is the student's own) and benchmarks/results/distill_paced.png.
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
from bench_ace import mean_sd, train_arm

from winnow.common.config import load_config
from winnow.common.runs import RunDir, atomic_path, atomic_write_text
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.evaluate import evaluate_greedy
from winnow.distill.models import load_model
from winnow.distill.rollout import TransformersBackend
from winnow.distill.sft_job import run_sft
from winnow.distill.tasks import build_task

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
EASY_DIGITS = (1, 2)
EASY_PROBLEMS = 256
SAVED = "teacher_rollouts_saved"


def arm_overrides(steps: int) -> dict[str, list[str]]:
    """The three arms as overrides of configs/distill/paced.yaml."""
    paced = ["pacing={alpha: 1.0, beta: 1.0, normalise: mean}"]
    return {
        "uniform": ["pacing=null", "divergence.schedule=null", "divergence.kind=forward_kl"],
        "paced": [*paced, "divergence.schedule=null", "divergence.kind=forward_kl"],
        "paced_fwd_rev": [
            *paced,
            f"divergence.schedule={{phases: [[forward_kl, {steps // 2}], [reverse_kl, null]]}}",
        ],
    }


def make_models(folder: Path) -> dict:
    """SFT the mixed-difficulty pair into ``folder``; returns the SFT run's summary."""
    config = load_config(
        SftConfig, ROOT / "configs/distill/sft_mixed.yaml", [f"output_dir={folder}"]
    )
    report = run_sft(config, root=folder / "runs", quiet=True)
    return json.loads((report.parent / "metrics.json").read_text())["summary"]


def easy_set(task, count: int = EASY_PROBLEMS) -> list:
    """``count`` held-out problems of the pool with at most ``max(EASY_DIGITS)`` digits, drawn
    with another seed than the trainer's held-out set (same prompt layout as the pool)."""
    problems = task.problems("test", 4 * count, seed=1)
    return [p for p in problems if p.difficulty in EASY_DIGITS][:count]


def greedy_metrics(model, tokenizer, task, easy: list, config: TrainConfig) -> dict:
    """Greedy accuracy on the trainer's held-out set (overall, per digit count) and the easy set."""
    backend = TransformersBackend(model, tokenizer)
    tokens = config.eval.max_new_tokens
    held_out = task.problems("test", config.task.test_problems, seed=0)
    result = evaluate_greedy(backend, task, held_out, tokens)
    easy_result = evaluate_greedy(backend, task, easy, tokens)
    return {
        "accuracy": result.accuracy,
        **{f"acc_d{d}": acc for d, acc in sorted(result.by_difficulty.items())},
        "easy_accuracy": easy_result.accuracy,
    }


def summarise(rows: list[dict], before: dict) -> dict:
    keys = [k for k in rows[0] if k not in ("seed", "arm")]
    summary: dict = {"before": before}
    for arm in dict.fromkeys(row["arm"] for row in rows):
        mine = [row for row in rows if row["arm"] == arm]
        summary[arm] = {key: mean_sd([row[key] for row in mine]) for key in keys}
    return summary


def plot_student(axes, summary: dict, histories: dict, buckets: list[str], name: str) -> None:
    left, right = axes
    arms = list(histories)
    colours = dict(zip(arms, ("#7f7f7f", "#1f77b4", "#d62728"), strict=False))
    width = 0.8 / (len(arms) + 1)
    x = np.arange(len(buckets))
    left.bar(x, [summary["before"][b] for b in buckets], width, color="#dddddd", label="before")
    for i, arm in enumerate(arms, start=1):
        means = [summary[arm][b]["mean"] for b in buckets]
        sds = [summary[arm][b]["sd"] for b in buckets]
        left.bar(x + i * width, means, width, yerr=sds, capsize=2, color=colours[arm], label=arm)
    left.set_xticks(x + width * len(arms) / 2, [b.replace("acc_", "") for b in buckets])
    left.set(ylabel="greedy held-out accuracy", ylim=(0, 1.05), title=f"student: {name}")
    left.legend(fontsize=8)
    left.grid(alpha=0.3, axis="y")
    for arm in arms:
        for j, history in enumerate(histories[arm]):
            evals = [(r["step"], r["eval_accuracy"]) for r in history if "eval_accuracy" in r]
            right.plot(
                *zip(*evals, strict=True),
                color=colours[arm],
                alpha=0.7,
                marker=".",
                label=arm if j == 0 else None,
            )
    right.set(xlabel="step", ylabel="greedy accuracy (all digit counts)", ylim=(0, 1.02))
    right.legend(fontsize=8)
    right.grid(alpha=0.3)


def run_student(name: str, student: Path, teacher: Path, steps: int, seeds, scratch: Path):
    """Every arm and seed from one student; returns (rows, histories, before, teacher metrics)."""

    def config_for(seed: int, arm: str) -> TrainConfig:
        return load_config(
            TrainConfig,
            ROOT / "configs/distill/paced.yaml",
            [
                f"seed={seed}",
                f"steps={steps}",
                f"eval.every={max(1, steps // 5)}",
                f"student.path={student}",
                f"teacher.path={teacher}",
                *arm_overrides(steps)[arm],
            ],
        )

    started = time.perf_counter()
    base = config_for(0, "uniform")
    task = build_task(base.task.name, **base.task.build_kwargs())
    easy = easy_set(task)
    model, tokenizer = load_model(str(student))
    before = greedy_metrics(model, tokenizer, task, easy, base)
    teacher_metrics = greedy_metrics(load_model(str(teacher))[0], tokenizer, task, easy, base)
    print(f"teacher: {json.dumps({k: round(v, 3) for k, v in teacher_metrics.items()})}")
    print(f"{name} before: {json.dumps({k: round(v, 3) for k, v in before.items()})}", flush=True)
    rows, histories = [], {arm: [] for arm in arm_overrides(steps)}
    for seed in seeds:
        for arm in arm_overrides(steps):
            config = config_for(seed, arm)
            RunDir(f"paced-{name}-{arm}-seed{seed}", root=scratch / "runs", seed=seed).write_config(
                config
            )
            label = f"{name} seed {seed} {arm}"
            distiller = train_arm(config, task, label, (SAVED, "mean_pass_rate"))
            after = greedy_metrics(distiller.student, tokenizer, task, easy, config)
            saved = [r.get(SAVED, 0.0) for r in distiller.history if r["step"] > 0]
            evals = [r["eval_accuracy"] for r in distiller.history if "eval_accuracy" in r]
            rows.append(
                {
                    "seed": seed,
                    "arm": arm,
                    **after,
                    "easy_change": after["easy_accuracy"] - before["easy_accuracy"],
                    "best_accuracy": max(evals),
                    SAVED: float(np.mean(saved)),
                }
            )
            histories[arm].append(distiller.history)
            shown = {k: round(v, 3) for k, v in rows[-1].items() if k not in ("seed", "arm")}
            print(
                f"{label}: {json.dumps(shown)} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return rows, histories, before, teacher_metrics, len(easy)


def trajectory(history: list[dict]) -> list[dict]:
    keys = ("step", "eval_accuracy", "mean_pass_rate", SAVED, "loss")
    return [{k: r[k] for k in keys if k in r} for r in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", type=Path, help="folder with teacher/ and student/")
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another student to run every arm from (repeatable), e.g. "
        "partial=models/mixed_partial/student",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 steps, smoke test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    steps = 10 if args.quick else args.steps
    scratch = Path(tempfile.mkdtemp(prefix="bench-paced-"))
    models = args.models or scratch / "models"
    started = time.perf_counter()
    sft = make_models(models) if args.models is None else {}
    students = {"weak": models / "student"}
    students |= {name: Path(path) for name, path in (s.split("=", 1) for s in args.student)}
    summary, rows, trajectories, teacher_metrics, easy_count = {}, {}, {}, {}, 0
    figure_parts = []
    for name, student in students.items():
        mine, histories, before, teacher_metrics, easy_count = run_student(
            name, student, models / "teacher", steps, seeds, scratch
        )
        summary[name] = summarise(mine, before)
        rows[name] = mine
        trajectories[name] = {arm: [trajectory(h) for h in hs] for arm, hs in histories.items()}
        buckets = [k for k in before if k.startswith("acc_d")] + ["easy_accuracy"]
        figure_parts.append((summary[name], histories, buckets, name))
    payload = {
        "benchmark": "distill_paced",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            "seeds": len(seeds),
            "steps": steps,
            "train_config": "configs/distill/paced.yaml",
            "arms": arm_overrides(steps),
            "sft_config": "configs/distill/sft_mixed.yaml",
            "students": {name: str(path) for name, path in students.items()},
            "models": str(models),
            "sft": sft,
            "teacher": teacher_metrics,
            "easy_set": {"digits": list(EASY_DIGITS), "problems": easy_count},
            "seconds": round(time.perf_counter() - started, 1),
        },
        "rows": rows,
        "trajectories": trajectories,
        "summary": summary,
    }
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(figure_parts), 2, figsize=(11, 4 * len(figure_parts)), squeeze=False
    )
    for row, part in zip(axes, figure_parts, strict=True):
        plot_student(row, *part)
    figure.tight_layout()
    out = scratch if args.quick else RESULTS  # a smoke test never replaces the results
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "distill_paced.png") as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    atomic_write_text(out / "distill_paced.json", json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / 'distill_paced.json'}", flush=True)
    for name, values in summary.items():
        print(name, json.dumps({k: v for k, v in values.items() if k != "before"}, indent=1))


if __name__ == "__main__":
    main()
