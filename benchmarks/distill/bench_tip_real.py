"""The token schemes on a real LM: SmolLM2-135M-Instruct teaching a student pruned from it.

The pair: the bundled SmolLM2-135M-Instruct fine-tuned on 2-digit addition asked as a chat message
(configs/distill/sft_smollm2.yaml; it answers exactly after SFT, never before), and a student
that keeps 24 of its 30 decoder layers (`winnow distill prune --layers 24`; 17% held-out, where
keeping 10, 15 or 20 layers left nothing right). Every arm starts
from that student and trains for the same steps on the same prompts per seed
(configs/distill/tip_smollm2.yaml: 16 prompts per step, one rollout each, forward KL):

- ``all``: every response token;
- ``tip_entropy_sample_50``: TIP's entropy-sampled half;
- ``random_50``: a uniformly random half;
- ``divergence_topk_50``: the half where teacher and student disagree most;
- ``q3_only``: confident but wrong positions (low entropy, high divergence) only;
- ``iw_opd``: every token, weighted as TRL's IW-OPD weights them (prefix discrepancy);
- ``first_30``: the first 30% of each response's positions (IW-OPD's position finding);
- ``opsa_control``: no teacher at all, a fixed advantage of -1 on every sampled token.

Measured per arm and seed: greedy held-out accuracy (128 problems, the same for all) at the
last step, the step time, and the share of the loss by quadrant and by position decile (means
over steps). ``--arms`` runs a subset and ``--resume PART.json`` adds to a previous part, so
the grid fits the 90 minutes the issue allows on 2 cores across several calls.

    .venv/bin/python benchmarks/distill/bench_tip_real.py --models models/smol
        [--seeds 3] [--steps 40] [--arms all,iw_opd] [--part PART.json] [--combine A.json ...]

Writes benchmarks/results/distill_tip_real.json (``summary``: ``model``, ``student_params``,
``teacher_params``, ``start_accuracy``, ``steps``, ``arms``: name -> mean, sd, seeds,
step_time_s (optimizer steps only), kept_fraction and the loss shares ``loss_mass_q1..q4`` and
``loss_mass_decile_0..9``) and distill_tip_real.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from winnow.common.config import load_config
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.distill.config import TrainConfig
from winnow.distill.jobs import configured_task, load_pair
from winnow.distill.trainer import OnPolicyDistiller

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "distill" / "tip_smollm2.yaml"
SELECTORS = {
    "all": {"name": "all"},
    "tip_entropy_sample_50": {"name": "entropy_sample", "p": 0.5, "alpha": 1.0},
    "random_50": {"name": "random", "p": 0.5},
    "divergence_topk_50": {"name": "divergence_topk", "p": 0.5},
    "q3_only": {"name": "quadrants", "keep_quadrants": [3]},
    "iw_opd": {"name": "all", "weighting": "iw_opd"},
    "first_30": {"name": "first_fraction", "p": 0.3},
}
CONTROL = "opsa_control"
# Loss shares by quadrant and by position decile, and the kept fraction (OPD arms only).
SHARES = (
    "kept_fraction",
    *(f"loss_mass_q{q}" for q in range(1, 5)),
    *(f"loss_mass_decile_{d}" for d in range(10)),
)
ARMS = (*SELECTORS, CONTROL)


def arm_config(arm: str, seed: int, steps: int, models: Path) -> TrainConfig:
    data = yaml.safe_load(CONFIG.read_text())
    data |= {
        "seed": seed,
        "steps": steps,
        "student": {"path": str(models / "student")},
        "teacher": {"path": str(models / "teacher")},
        "arms": {arm: SELECTORS.get(arm, {"name": "all"})},
    }
    if arm == CONTROL:
        data["objective"] = "opsa"
    return load_config(TrainConfig, data)


def run_arm(arm: str, seed: int, steps: int, models: Path) -> dict:
    """Train one arm from the student; accuracy before and after, seconds per optimizer step
    (evaluations excluded), and the loss shares averaged over the steps."""
    config = arm_config(arm, seed, steps, models)
    student, teacher, tokenizer = load_pair(config)
    task = configured_task(config.task, tokenizer)
    distiller = OnPolicyDistiller(student, teacher, tokenizer, task, config, config.arms[arm])
    start = distiller.evaluate().accuracy
    history, seconds = [], []
    for _ in range(steps):
        started = time.perf_counter()
        history.append(distiller.train_step())
        seconds.append(time.perf_counter() - started)
    final = distiller.evaluate().accuracy
    shares = {
        key: float(np.mean([row[key] for row in history if key in row]))
        for key in SHARES
        if any(key in row for row in history)
    }
    return {
        "arm": arm,
        "seed": seed,
        "start_accuracy": start,
        "final_accuracy": final,
        "step_seconds": float(np.mean(seconds)),
        **shares,
    }


def summarise(rows: list[dict], steps: int, pair: dict) -> dict:
    arms = {}
    for arm in ARMS:
        mine = [row for row in rows if row["arm"] == arm]
        if not mine:
            continue
        final = np.array([row["final_accuracy"] for row in mine])
        arms[arm] = {
            "mean": float(final.mean()),
            "sd": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "seeds": len(final),
            "step_time_s": float(np.mean([row["step_seconds"] for row in mine])),
            **{
                key: float(np.mean([row[key] for row in mine]))
                for key in SHARES
                if all(key in row for row in mine)
            },
        }
    return {
        **pair,
        "start_accuracy": rows[0]["start_accuracy"],
        "steps": steps,
        "arms": arms,
    }


def pair_facts(models: Path) -> dict:
    from winnow.distill.models import load_model

    facts = {"model": "SmolLM2-135M-Instruct (bundled GGUF, de-quantised), SFT; student pruned"}
    for role in ("student", "teacher"):
        model, _ = load_model(models / role)
        facts[f"{role}_params"] = sum(p.numel() for p in model.parameters())
        facts[f"{role}_layers"] = model.config.num_hidden_layers
    return facts


def plot(rows: list[dict], summary: dict):
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for i, arm in enumerate(arms):
        finals = [row["final_accuracy"] for row in rows if row["arm"] == arm]
        axis.scatter([i] * len(finals), finals, s=18, color="#1f77b4", alpha=0.7)
        stats = summary["arms"][arm]
        axis.errorbar(i, stats["mean"], yerr=stats["sd"], fmt="_", color="k", capsize=4)
    axis.axhline(summary["start_accuracy"], color="grey", linestyle=":", label="student before")
    axis.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
    axis.set(ylabel=f"held-out accuracy after {summary['steps']} steps", ylim=(-0.02, 1.02))
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def write(rows: list[dict], steps: int, pair: dict, config: dict) -> None:
    summary = summarise(rows, steps, pair)
    payload = {
        "benchmark": "distill_tip_real",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "config": config,
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "distill_tip_real.png") as tmp:
        plot(rows, summary).savefig(tmp, format="png", dpi=110)
    atomic_write_text(RESULTS / "distill_tip_real.json", json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "smol")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset")
    parser.add_argument("--part", type=Path, help="append this call's rows to this JSON file")
    parser.add_argument("--combine", type=Path, nargs="*", help="parts to combine, no training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = {
        "train_config": str(CONFIG.relative_to(ROOT)),
        "sft_config": "configs/distill/sft_smollm2.yaml",
        "steps": args.steps,
        "threads": args.threads,
        "cut": "40 steps of 16 prompts, answers of at most 6 tokens, 128 held-out problems",
    }
    if args.combine:
        rows = [row for part in args.combine for row in json.loads(part.read_text())]
        write(rows, args.steps, pair_facts(args.models), config)
        return
    arms = [arm for arm in args.arms.split(",") if arm]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    rows = json.loads(args.part.read_text()) if args.part and args.part.exists() else []
    started = time.perf_counter()
    for seed in range(args.seeds):
        for arm in arms:
            if any(r["arm"] == arm and r["seed"] == seed for r in rows):
                continue  # done in an earlier call
            rows.append(run_arm(arm, seed, args.steps, args.models))
            print(
                f"seed {seed} {arm}: {rows[-1]['final_accuracy']:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            if args.part:
                atomic_write_text(args.part, json.dumps(rows, indent=1) + "\n")
    write(rows, args.steps, pair_facts(args.models), config)


if __name__ == "__main__":
    main()
