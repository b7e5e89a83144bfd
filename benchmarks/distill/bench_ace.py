"""ACE vs GRPO on a student that usually drops carries: pass@k before and during training.

The student comes from ``winnow distill sft`` with configs/distill/sft_ace.yaml: the correct
3-digit teacher of sft_arith.yaml fine-tuned on sums of which 75% have every carry dropped, so
it is confidently wrong on problems with a carry yet sometimes right, and GRPO groups of 8
rollouts have mixed rewards. Each seed trains two arms of configs/distill/ace.yaml from that
student for the same steps: ``grpo`` (alpha_ace 0) and ``ace`` (alpha_ace 1, multiplicative).
The seed changes the prompts drawn and the rollouts.

pass@k (k = 1, 4, 16, 64) uses the unbiased estimator (``evaluate.pass_at_k``) on 64 samples
per held-out problem at temperature 1, with the same sampling seed for every model, before
training and at each of ``--checkpoints`` and the last step (this student learns to carry
within tens of steps, so the final pass@k saturates); greedy accuracy is on the trainer's 256
held-out problems. The ACE arm logs, per step, the share of its wrong rollouts with
c = log pi_old - log pi_ref > 0 (plain GRPO never runs the reference).

    .venv/bin/python benchmarks/distill/bench_ace.py --models models/ace
        [--seeds 5] [--steps 150] [--checkpoints 5,10,25,50] [--quick]

Without ``--models`` the student is made first (it needs models/arith/teacher). Writes
benchmarks/results/distill_ace.json (``summary``: arm -> pass@k and greedy mean, sd, seeds at
the last step, ``by_step`` the same at every checkpoint with the paired ACE - GRPO difference,
and the c > 0 trajectory) and benchmarks/results/distill_ace.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from winnow.common.config import load_config
from winnow.common.runs import RunDir, atomic_path, atomic_write_text
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.evaluate import evaluate_greedy, pass_at_k, sample_answers
from winnow.distill.jobs import load_pair
from winnow.distill.models import load_model
from winnow.distill.rollout import TransformersBackend
from winnow.distill.sft_job import run_sft
from winnow.distill.tasks import build_task
from winnow.distill.tokens import SelectorConfig
from winnow.distill.trainer import OnPolicyDistiller

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
KS = (1, 4, 16, 64)
ARMS = {"grpo": 0.0, "ace": 1.0}
CONFIDENT = "wrong_confident_fraction"
TRAJECTORY = ("step", "train_reward", "kept_rollouts", "eval_accuracy")


def make_models(folder: Path) -> dict:
    """SFT the mixed dropped-carry student into ``folder``; returns the SFT run's summary."""
    config = load_config(SftConfig, ROOT / "configs/distill/sft_ace.yaml", [f"output_dir={folder}"])
    report = run_sft(config, root=folder / "runs", quiet=True)
    return json.loads((report.parent / "metrics.json").read_text())["summary"]


def carries(prompt: str) -> int:
    """Number of carries in the column addition of ``"a+b="``."""
    a, b = (int(x) for x in prompt.rstrip("=").split("+"))
    count = carry = 0
    while a or b:
        carry = int(a % 10 + b % 10 + carry >= 10)
        count += carry
        a, b = a // 10, b // 10
    return count


def sampled_metrics(backend, task, problems, samples: int, max_new_tokens: int) -> dict:
    """pass@k for KS on ``samples`` samples per problem, overall and by number of carries."""
    counts = sample_answers(
        backend, task, problems, n=samples, max_new_tokens=max_new_tokens, seed=0
    ).correct
    ks = [k for k in KS if k <= samples]
    metrics = {f"pass@{k}": float(pass_at_k(samples, counts, k).mean()) for k in ks}
    buckets = torch.tensor([carries(p.prompt) for p in problems])
    for bucket in sorted(set(buckets.tolist())):
        mine = counts[buckets == bucket]
        for k in (ks[0], ks[-1]):
            metrics[f"pass@{k} carries={bucket}"] = float(pass_at_k(samples, mine, k).mean())
    return metrics


def evaluate_model(model, tokenizer, task, config: TrainConfig, problems, samples: int) -> dict:
    backend = TransformersBackend(model, tokenizer)
    held_out = task.problems("test", config.task.test_problems, seed=0)
    greedy = evaluate_greedy(backend, task, held_out, config.eval.max_new_tokens)
    return {
        "greedy": greedy.accuracy,
        **sampled_metrics(backend, task, problems, samples, config.eval.max_new_tokens),
    }


def train_arm(
    config: TrainConfig, task, label: str, watch: tuple[str, ...] = ()
) -> OnPolicyDistiller:
    """Train ``config`` with every token kept; see :func:`train_until`."""
    distiller = make_distiller(config, task)
    train_until(distiller, config.steps, label, watch)
    return distiller


def make_distiller(config: TrainConfig, task) -> OnPolicyDistiller:
    student, teacher, tokenizer = load_pair(config)
    return OnPolicyDistiller(student, teacher, tokenizer, task, config, SelectorConfig(name="all"))


def train_until(distiller, steps: int, label: str, watch: tuple[str, ...] = ()) -> None:
    """Train to step ``steps``; at each evaluation print greedy accuracy and the mean of each
    ``watch`` metric since the previous evaluation."""
    config = distiller.config
    started = time.perf_counter()

    def log(row: dict) -> None:
        if "eval_accuracy" not in row:
            return
        recent = distiller.history[-config.eval.every :]
        shown = ""
        for key in watch:
            values = [r[key] for r in recent if key in r]
            shown += f" {key} {np.mean(values):.2f}" if values else ""
        print(
            f"  {label} step {row['step']:>4}: greedy {row['eval_accuracy']:.3f}{shown} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    distiller.train(steps, on_step=log)


def confident_trajectory(histories: list[list[dict]], steps: int, bins: int = 5) -> dict:
    """Mean and sd over seeds of the c > 0 share in ``bins`` equal step windows."""
    edges = np.linspace(0, steps, bins + 1)
    per_seed = []
    for history in histories:
        rows = [(r["step"], r[CONFIDENT]) for r in history if CONFIDENT in r]
        per_seed.append(
            [
                float(np.mean([v for s, v in rows if lo < s <= hi] or [np.nan]))
                for lo, hi in pairwise(edges)
            ]
        )
    values = np.array(per_seed)
    return {
        "windows": [f"{int(lo) + 1}-{int(hi)}" for lo, hi in pairwise(edges)],
        "mean": np.nanmean(values, axis=0).round(4).tolist(),
        "sd": (np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else 0 * values[0])
        .round(4)
        .tolist(),
        "overall_mean": float(np.nanmean(values)),
    }


def mean_sd(values: list[float]) -> dict:
    array = np.array(values, dtype=float)
    sd = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "sd": sd, "seeds": len(array)}


def summarise_step(rows: list[dict], metrics: list[str]) -> dict:
    """Per arm mean/sd over seeds of ``metrics``, and the paired ACE - GRPO difference."""
    summary: dict = {}
    for arm in ARMS:
        mine = [row for row in rows if row["arm"] == arm]
        summary[arm] = {key: mean_sd([row[key] for row in mine]) for key in metrics}
        for key in ("kept_rollouts", "clip_fraction"):
            summary[arm][key] = mean_sd([row[key] for row in mine])
    seeds = sorted({row["seed"] for row in rows})
    by = {(row["arm"], row["seed"]): row for row in rows}
    summary["ace_minus_grpo"] = {
        key: mean_sd([by["ace", s][key] - by["grpo", s][key] for s in seeds])
        for key in metrics
        if " " not in key
    }
    return summary


def summarise(
    rows: list[dict], before: dict, histories: dict, steps: int, updates_per_batch: int
) -> dict:
    """The final step's arms at the top level; every measured step under ``by_step``;
    ``clip_fraction_mean``: the share of trained tokens whose clip bound, over every step of
    every run (mean of the per-run means)."""
    metrics = [key for key in before if key == "greedy" or key.startswith("pass@")]
    by_step = {
        step: summarise_step([row for row in rows if row["step"] == step], metrics)
        for step in sorted({row["step"] for row in rows})
    }
    last = [row for row in rows if row["step"] == steps]
    return {
        "before": before,
        **by_step[steps],
        "updates_per_batch": updates_per_batch,
        "clip_fraction_mean": float(np.mean([row["clip_fraction"] for row in last])),
        "by_step": by_step,
        "wrong_confident_fraction_ace": confident_trajectory(histories["ace"], steps),
    }


def plot(summary: dict, histories: dict):
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    ks = [k for k in KS if f"pass@{k}" in summary["before"]]
    left.plot(ks, [summary["before"][f"pass@{k}"] for k in ks], "k:o", label="before")
    for arm, colour in zip(ARMS, ("#1f77b4", "#d62728"), strict=True):
        means = np.array([summary[arm][f"pass@{k}"]["mean"] for k in ks])
        sds = np.array([summary[arm][f"pass@{k}"]["sd"] for k in ks])
        left.errorbar(ks, means, yerr=sds, marker="o", capsize=3, color=colour, label=arm)
    left.set(xscale="log", xlabel="k", ylabel="pass@k (T = 1), final step", ylim=(0, 1.02))
    left.legend(fontsize=8)
    for step, values in summary["by_step"].items():
        diff = values["ace_minus_grpo"]
        means = [diff[f"pass@{k}"]["mean"] for k in ks]
        sds = [diff[f"pass@{k}"]["sd"] for k in ks]
        middle.errorbar(ks, means, yerr=sds, marker="o", capsize=3, label=f"step {step}")
    middle.axhline(0, color="k", lw=0.8)
    middle.set(xscale="log", xlabel="k", ylabel="ACE - GRPO pass@k (paired by seed)")
    middle.legend(fontsize=8)
    for axis in (left, middle):
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.grid(alpha=0.3)
    for history in histories["ace"]:
        rows = [(r["step"], r[CONFIDENT]) for r in history if CONFIDENT in r]
        steps, values = zip(*rows, strict=True) if rows else ((), ())
        window = 10
        smooth = np.convolve(values, np.ones(window) / window, mode="valid") if values else []
        right.plot(steps[window - 1 :], smooth, color="#d62728", alpha=0.7, lw=1)
    right.set(
        xlabel="step",
        ylabel="share of wrong rollouts with c > 0",
        title="ACE arm, per seed (10-step mean)",
        ylim=(-0.02, 1.02),
    )
    right.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-problems", type=int, default=128, help="problems for pass@k")
    parser.add_argument("--samples", type=int, default=64, help="samples per problem for pass@k")
    parser.add_argument("--models", type=Path, help="folder with student/ (sft_ace.yaml)")
    parser.add_argument(
        "--checkpoints", default="5,10,25,50", help="earlier steps at which pass@k is measured too"
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 steps, smoke test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    steps = 10 if args.quick else args.steps
    checkpoints = [5] if args.quick else [int(c) for c in args.checkpoints.split(",") if c]
    checkpoints = sorted({c for c in checkpoints if 0 < c < steps} | {steps})
    eval_problems, samples = (16, 16) if args.quick else (args.eval_problems, args.samples)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ace-"))
    models = args.models or scratch / "models"
    started = time.perf_counter()
    sft = make_models(models) if args.models is None else {}

    def config_for(seed: int, alpha: float) -> TrainConfig:
        return load_config(
            TrainConfig,
            ROOT / "configs/distill/ace.yaml",
            [
                f"seed={seed}",
                f"steps={steps}",
                f"student.path={models / 'student'}",
                f"teacher.path={models / 'student'}",
                f"grpo.alpha_ace={alpha}",
            ],
        )

    base = config_for(0, 0.0)
    task = build_task(base.task.name, **base.task.build_kwargs())
    problems = task.problems("test", eval_problems, seed=0)
    student, tokenizer = load_model(str(models / "student"))
    before = evaluate_model(student, tokenizer, task, base, problems, samples)
    print(f"before: {json.dumps({k: round(v, 3) for k, v in before.items()})}", flush=True)
    rows, histories = [], {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm, alpha in ARMS.items():
            config = config_for(seed, alpha)
            RunDir(f"ace-{arm}-seed{seed}", root=scratch / "runs", seed=seed).write_config(config)
            distiller = make_distiller(config, task)
            for checkpoint in checkpoints:
                train_until(distiller, checkpoint, f"seed {seed} {arm}", (CONFIDENT,))
                after = evaluate_model(
                    distiller.student, tokenizer, task, config, problems, samples
                )
                logged = {
                    key: float(np.mean([r[key] for r in distiller.history if key in r]))
                    for key in ("kept_rollouts", "clip_fraction")
                }
                rows.append({"seed": seed, "arm": arm, "step": checkpoint, **after} | logged)
                shown = {k: round(v, 3) for k, v in after.items() if " " not in k}
                print(
                    f"seed {seed} {arm} step {checkpoint}: {json.dumps(shown)} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
            histories[arm].append(distiller.history)
    summary = summarise(rows, before, histories, steps, base.grpo.updates_per_batch)
    payload = {
        "benchmark": "distill_ace",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            "seeds": len(seeds),
            "steps": steps,
            "pass_at_k_steps": checkpoints,
            "train_config": "configs/distill/ace.yaml",
            "sft_config": "configs/distill/sft_ace.yaml",
            "models": str(models),
            "sft": sft,
            "pass_at_k": {"problems": eval_problems, "samples": samples, "temperature": 1.0},
            "seconds": round(time.perf_counter() - started, 1),
        },
        "rows": rows,
        "trajectories": {
            arm: [
                [{k: r[k] for k in (*TRAJECTORY, CONFIDENT) if k in r} for r in history]
                for history in histories[arm]
            ]
            for arm in ARMS
        },
        "summary": summary,
    }
    out = scratch if args.quick else RESULTS  # a smoke test never replaces the results
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "distill_ace.png") as tmp:
        plot(summary, histories).savefig(tmp, format="png", dpi=110)
    atomic_write_text(out / "distill_ace.json", json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / 'distill_ace.json'}", flush=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "before"}, indent=1))


if __name__ == "__main__":
    main()
