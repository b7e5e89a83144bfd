"""OPSDC on the verbose-addition toy: length and accuracy under the plain prompt, over seeds.

The base model comes from ``winnow distill sft`` with configs/distill/sft_verbose.yaml (verbose
after "12+34=", terse after "Be concise. 12+34="; trained once, seed 0, unless --models points
at a folder holding it as teacher/). Each arm then self-distils a fresh copy of it with
configs/distill/opsdc.yaml (all tokens), changing only the divergence and how the teacher
follows the student: refreshed every M steps (reverse KL with M = 50, the paper's, 20, never
and 1; forward KL with M = 50 and never) or moved towards it by a rate after every step (an EMA
teacher, as TRL's self-distillation trainers offer: reverse KL at 0.02 and 0.1). The seed
changes the prompts drawn and the rollouts. Length (tokens, EOS included) and accuracy are
greedy on the same 256 held-out plain prompts for every arm and seed; each trained student is
also scored after the instruction (what a refresh would copy into the teacher). The frontier
beside them: pass@k (k = 1, 2, 4, 8, 16; 16 samples per prompt at temperature 1, unbiased
estimator) and the number of distinct answers among those 16 samples, for the base model and
each trained student (self-distillation is reported to raise pass@1 while pass@k flattens and
diversity falls, arXiv 2606.26091).

    .venv/bin/python benchmarks/distill/bench_opsdc.py [--seeds 3] [--steps 150] [--quick]

Writes benchmarks/results/distill_opsdc.json (``summary``: arm -> length and accuracy mean, sd,
seeds, ``length_reduction`` = 1 - length / base length and ``accuracy_change`` = accuracy -
base accuracy, mean and sd over seeds, ``pass_at_k``, ``pass_at_16``, ``distinct_answers``;
``best_arm``: the largest length reduction among arms that keep accuracy within 0.02 of the
base) and benchmarks/results/distill_opsdc.png (length and accuracy against step per arm, mean
over seeds; pass@16 and distinct answers per arm, the best arm marked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from winnow.common.config import load_config
from winnow.common.runs import RunDir, atomic_path, atomic_write_text
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.evaluate import evaluate_greedy, pass_at_k, sample_answers
from winnow.distill.jobs import train_section
from winnow.distill.sft_job import run_sft

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tip import arm_rows  # benchmarks are scripts, not a package

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TRAIN_CONFIG = ROOT / "configs/distill/opsdc.yaml"
SFT_CONFIG = ROOT / "configs/distill/sft_verbose.yaml"
# arm -> (divergence, teacher refresh interval M, EMA rate); neither = the initial model always
ARMS: dict[str, tuple[str, int | None, float | None]] = {
    "reverse_M50": ("reverse_kl", 50, None),
    "reverse_M20": ("reverse_kl", 20, None),
    "reverse_never": ("reverse_kl", None, None),
    "reverse_M1": ("reverse_kl", 1, None),
    "reverse_ema0.02": ("reverse_kl", None, 0.02),
    "reverse_ema0.1": ("reverse_kl", None, 0.1),
    "forward_M50": ("forward_kl", 50, None),
    "forward_never": ("forward_kl", None, None),
}
KS = (1, 2, 4, 8, 16)
SAMPLES = 16
ACCURACY_KEPT = 0.02  # best_arm: accuracy within this of the base model's


def make_base_model(folder: Path, steps: int | None) -> dict:
    """SFT the verbose base model into ``folder``/teacher; returns the SFT run's summary."""
    overrides = [f"output_dir={folder}"] + ([f"teacher.steps={steps}"] if steps else [])
    config = load_config(SftConfig, SFT_CONFIG, overrides)
    report = run_sft(config, root=folder / "runs", quiet=True)
    return json.loads((report.parent / "metrics.json").read_text())["summary"]


def plain_and_instructed(config: TrainConfig, path: Path | str) -> dict:
    """Greedy accuracy and length of the model at ``path`` on the plain and the instructed
    held-out prompts; pass@k and distinct answers of 16 samples per plain prompt."""
    from winnow.distill.models import load_model
    from winnow.distill.rollout import TransformersBackend
    from winnow.distill.tasks import build_task

    model, tokenizer = load_model(path)
    task = build_task(config.task.name, **config.task.build_kwargs())
    problems = task.problems("test", config.task.test_problems, seed=0)
    backend, tokens = TransformersBackend(model, tokenizer), config.eval.max_new_tokens
    plain = evaluate_greedy(backend, task, problems, tokens)
    instructed = evaluate_greedy(backend, task, task.instructed(problems), tokens)
    sampled = sample_answers(backend, task, problems, SAMPLES, tokens, temperature=1.0)
    return {
        "accuracy": plain.accuracy,
        "length": plain.mean_length,
        "instructed_accuracy": instructed.accuracy,
        "instructed_length": instructed.mean_length,
        **{f"pass@{k}": float(pass_at_k(SAMPLES, sampled.correct, k).mean()) for k in KS},
        "distinct_answers": float(sampled.distinct.double().mean()),
    }


def arm_config(args, models: Path, seed: int, divergence: str, refresh, rate):
    overrides = [
        f"seed={seed}",
        f"steps={args.steps}",
        f"student.path={models / 'teacher'}",
        f"teacher.path={models / 'teacher'}",
        f"divergence.kind={divergence}",
        f"teacher_refresh_every={'null' if refresh is None else refresh}",
        f"teacher_update_rate={'null' if rate is None else rate}",
        "arms={all: {name: all}}",
    ]
    if args.quick:
        overrides += ["task.test_problems=64", "eval.every=5"]
    return load_config(TrainConfig, TRAIN_CONFIG, overrides)


def curves(history: list[dict], prompts_per_step: int) -> dict:
    """Eval points (step, accuracy, greedy length); per step the rollouts' mean length and
    reward (accuracy of the temperature-1 samples on training prompts)."""
    evals = [row for row in history if "eval_accuracy" in row]
    steps = [row for row in history if "response_tokens" in row]
    return {
        "step": [int(row["step"]) for row in evals],
        "accuracy": [row["eval_accuracy"] for row in evals],
        "length": [row["eval_mean_length"] for row in evals],
        "sampled_length": [row["response_tokens"] / prompts_per_step for row in steps],
        "sampled_reward": [row["train_reward"] for row in steps],
    }


def mean_sd(values) -> dict:
    values = np.asarray(values, dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "sd": sd, "seeds": len(values)}


def summarise(rows: list[dict], base: dict) -> dict:
    summary = {}
    for arm in dict.fromkeys(row["arm"] for row in rows):
        mine = [row for row in rows if row["arm"] == arm]
        length = [row["final length"] for row in mine]
        accuracy = [row["final accuracy"] for row in mine]
        reduction = mean_sd([1 - value / base["length"] for value in length])
        change = mean_sd([value - base["accuracy"] for value in accuracy])
        summary[arm] = {
            "divergence": mine[0]["divergence"],
            "refresh_every": mine[0]["refresh_every"],
            "update_rate": mine[0]["update_rate"],
            "length": mean_sd(length),
            "accuracy": mean_sd(accuracy),
            "length_reduction": reduction["mean"],
            "length_reduction_sd": reduction["sd"],
            "accuracy_change": change["mean"],
            "accuracy_change_sd": change["sd"],
            "best_accuracy_mean": float(np.mean([row["best accuracy"] for row in mine])),
            # the trained student given the instruction: what a refresh copies into the teacher
            "instructed_accuracy": mean_sd([row["final instructed accuracy"] for row in mine]),
            "instructed_length": mean_sd([row["final instructed length"] for row in mine]),
            # temperature-1 rollouts, mean over the first and the last 10 steps
            "sampled_reward_first10": _window_mean(mine, "sampled_reward", slice(0, 10)),
            "sampled_reward_last10": _window_mean(mine, "sampled_reward", slice(-10, None)),
            "sampled_length_first10": _window_mean(mine, "sampled_length", slice(0, 10)),
            "sampled_length_last10": _window_mean(mine, "sampled_length", slice(-10, None)),
            # the frontier: 16 samples per held-out plain prompt at temperature 1
            "pass_at_k": {
                str(k): float(np.mean([row["final"][f"pass@{k}"] for row in mine])) for k in KS
            },
            "pass_at_16": mean_sd([row["final"]["pass@16"] for row in mine]),
            "distinct_answers": mean_sd([row["final"]["distinct_answers"] for row in mine]),
        }
    kept = [arm for arm, s in summary.items() if s["accuracy_change"] >= -ACCURACY_KEPT]
    best = max(kept or summary, key=lambda arm: summary[arm]["length_reduction"])
    return {"best_arm": best, "arms": summary}


def plot(rows: list[dict], base: dict, summary: dict):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(18, 4.2), width_ratios=(1, 1, 1.1))
    for arm in dict.fromkeys(row["arm"] for row in rows):
        mine = [row["curves"] for row in rows if row["arm"] == arm]
        steps = mine[0]["step"]
        for axis, key in zip(axes[:2], ("length", "accuracy"), strict=True):
            values = np.array([curve[key] for curve in mine])
            axis.plot(steps, values.mean(0), marker="o", markersize=3, label=arm)
    for axis, key, label in zip(
        axes[:2],
        ("length", "accuracy"),
        ("mean response length (tokens, greedy)", "held-out accuracy (greedy)"),
        strict=True,
    ):
        axis.axhline(
            base[f"instructed_{key}"], color="grey", linestyle=":", label="base, instructed"
        )
        axis.set(xlabel="optimizer step", ylabel=label)
        axis.grid(alpha=0.3)
    axes[0].set_ylim(0, None)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=8)
    arms, best = list(summary["arms"]), summary["best_arm"]
    passed = [summary["arms"][arm]["pass_at_16"]["mean"] for arm in arms]
    colours = ["#d62728" if arm == best else "#1f77b4" for arm in arms]
    axes[2].bar(range(len(arms)), passed, color=colours)
    axes[2].axhline(base["pass@16"], color="grey", linestyle=":", label="base model")
    for i, arm in enumerate(arms):
        distinct = summary["arms"][arm]["distinct_answers"]["mean"]
        axes[2].annotate(f"{distinct:.1f}", (i, passed[i]), ha="center", va="bottom", fontsize=7)
    axes[2].set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
    axes[2].set(
        ylabel="pass@16 (T = 1); label: distinct answers of 16",
        ylim=(0, 1.08),
        title=f"best arm (red): {best}",
    )
    axes[2].legend(fontsize=8)
    figure.suptitle("OPSDC on verbose addition, plain prompt (mean over seeds)")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--models", type=Path, help="folder with the base model as teacher/")
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 steps, smoke test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.steps = 1, 10
    scratch = Path(tempfile.mkdtemp(prefix="bench-opsdc-"))
    models = args.models or scratch / "models"
    started = time.perf_counter()
    sft = {}
    if args.models is None:
        print("training the base model (configs/distill/sft_verbose.yaml)", flush=True)
        sft = make_base_model(models, steps=100 if args.quick else None)
    base = plain_and_instructed(
        arm_config(args, models, 0, "reverse_kl", None, None), models / "teacher"
    )
    print(f"base model: {json.dumps(base)}", flush=True)
    rows, total = [], args.seeds * len(ARMS)
    for seed in range(args.seeds):
        for arm, (divergence, refresh, rate) in ARMS.items():
            arm_started = time.perf_counter()
            config = arm_config(args, models, seed, divergence, refresh, rate)
            run = RunDir(f"opsdc-{arm}-seed{seed}", root=scratch / "runs", seed=seed)
            section = train_section(config, run, quiet=True)
            row = arm_rows(section.summary, seed)[0] | {
                "arm": arm,
                "divergence": divergence,
                "refresh_every": refresh,
                "update_rate": rate,
                "seconds": round(time.perf_counter() - arm_started, 1),
            }
            final = plain_and_instructed(config, run.path / "students" / "all")
            row["final instructed accuracy"] = final["instructed_accuracy"]
            row["final instructed length"] = final["instructed_length"]
            row["final"] = final
            row["curves"] = curves(_history(run), config.prompts_per_step)
            rows.append(row)
            print(
                f"[{len(rows)}/{total}] seed {seed} {arm}: length {row['start length']:.1f} -> "
                f"{row['final length']:.1f}, accuracy {row['start accuracy']:.3f} -> "
                f"{row['final accuracy']:.3f}, instructed {final['instructed_accuracy']:.3f} "
                f"({row['seconds']:.0f} s; "
                f"{time.perf_counter() - started:.0f} s total)",
                flush=True,
            )
    summary = summarise(rows, base)
    payload = {
        "benchmark": "distill_opsdc",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            "seeds": args.seeds,
            "steps": args.steps,
            "arms": {
                arm: {"divergence": d, "refresh_every": m, "update_rate": r}
                for arm, (d, m, r) in ARMS.items()
            },
            "train_config": "configs/distill/opsdc.yaml",
            "sft_config": "configs/distill/sft_verbose.yaml",
            "models": str(args.models) if args.models else "trained by this run",
            "sft": sft,
            "quick": args.quick,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "base_model": base,
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "distill_opsdc_quick" if args.quick else "distill_opsdc"
    with atomic_path(RESULTS / f"{name}.png") as tmp:
        plot(rows, base, summary).savefig(tmp, format="png", dpi=110)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


def _window_mean(rows: list[dict], key: str, window: slice) -> float:
    return float(np.mean([np.mean(row["curves"][key][window]) for row in rows]))


def _history(run: RunDir) -> list[dict]:
    """The metric rows train_section logged to the run's metrics.jsonl (one arm per run)."""
    return [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]


if __name__ == "__main__":
    main()
