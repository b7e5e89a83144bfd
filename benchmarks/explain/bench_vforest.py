"""Claim: the bias-corrected IJ variance of a V-statistic forest is close to the truth.

On Friedman-1 (n=500, noise=1), for k in {25, 50, 100} and B in {250, 500, 1000} trees, R
replicate training sets give the Monte-Carlo truth: the variance across replicates of the forest
prediction at fixed test points. Each estimator is scored by

- ratio    = mean over replicates of the estimated variance / the truth (1 is right), and
- coverage = share of replicates whose 95% normal interval covers E[forest prediction]
  (the mean over replicates of the forest prediction).

Estimators: winnow's ``ij_v``, ``ij_v_calibrated`` (the same forest), ``internal`` and
``internal_corrected``, and
``forestci.random_forest_error`` with ``calibrate=False`` and ``calibrate=True``. forestci runs on
*our* ``ij_v`` forest's trees (through a small sklearn-compatible view, with our in-bag counts
passed as its dense ``inbag``), so both IJ implementations see the same forest and the same
timing input. forestci returns the sampling variance only; its totals add the same Monte-Carlo
part ``Var_b(t_b) / B`` as ours. The internal estimators need the grouped design, so each
replicate also grows a grouped forest, and their truth is that forest's variance across
replicates. The test set has 25 points because forestci skips calibration for 20 or fewer.

Also recorded: wall time of winnow's ``prediction_variance`` (ij_v and ij_v_calibrated) against
forestci (uncalibrated and calibrated) on the same forest and test points, all including the
per-tree predictions. ``summary.default_variant`` is the ungrouped variant whose worst coverage
at >= 500 trees is nearest 95% (the goal: within [0.93, 0.97]). The wider simulation (three
functions, Y-interval peers) is ``bench_coverage.py``.

    .venv/bin/python benchmarks/explain/bench_vforest.py              # R=200
    .venv/bin/python benchmarks/explain/bench_vforest.py --quick      # smoke run, R=6 (_quick.json)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from scipy.stats import norm  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from winnow.common.progress import track_progress  # noqa: E402
from winnow.common.runs import atomic_write_text, to_jsonable  # noqa: E402
from winnow.explain.coverage import forestci_variance, score_intervals  # noqa: E402
from winnow.explain.vforest import VForestRegressor  # noqa: E402

RESULT = Path(__file__).resolve().parents[1] / "results" / "explain_vforest.json"
N_TRAIN = 500
NOISE = 1.0
SUBSAMPLE_SIZES = (25, 50, 100)
TREE_COUNTS = (250, 500, 1000)
N_TEST = 25
TEST_SEED = 2021
ALPHA = 0.05
OURS = ("ij_v", "ij_v_calibrated", "internal", "internal_corrected")
UNGROUPED = ("ij_v", "ij_v_calibrated")
GOAL = (0.93, 0.97)
FORESTCI = ("forestci", "forestci_calibrated")
ESTIMATORS = OURS + FORESTCI


def run_replicate(rep: int, test_points: np.ndarray, seed: int) -> dict:
    """Every setting on training set ``rep``: means and total variances ``[m]`` per estimator."""
    X, y = make_friedman1(n_samples=N_TRAIN, noise=NOISE, random_state=seed + rep)
    out = {}
    with threadpool_limits(1):
        for k in SUBSAMPLE_SIZES:
            for n_trees in TREE_COUNTS:
                forest_seed = seed + 7919 * rep + 31 * k + n_trees
                row = {}
                forest = VForestRegressor(
                    n_estimators=n_trees, subsample_size=k, random_state=forest_seed, n_jobs=1
                ).fit(X, y)
                for variance, timer in zip(UNGROUPED, ("ours", "ours_calibrated"), strict=True):
                    start = time.perf_counter()
                    estimate = forest.set_params(variance=variance).prediction_variance(test_points)
                    row[f"seconds_{timer}"] = time.perf_counter() - start
                    row[variance] = estimate.total
                row["mean"] = estimate.mean
                for name, calibrate in zip(FORESTCI, (False, True), strict=True):
                    sampling, seconds = forestci_variance(
                        forest, N_TRAIN, test_points, calibrate, forest_seed
                    )
                    row[name] = sampling + estimate.monte_carlo
                    row[f"seconds_{name}"] = seconds
                grouped = VForestRegressor(
                    n_estimators=n_trees,
                    subsample_size=k,
                    variance="internal",
                    random_state=forest_seed + 1,
                    n_jobs=1,
                ).fit(X, y)
                row["n_trees_grouped"] = len(grouped.estimators_)
                row["n_groups"] = grouped.n_groups_
                # Both internal estimators read the same grouped forest; only the formula differs.
                for variance in ("internal", "internal_corrected"):
                    estimate = grouped.set_params(variance=variance).prediction_variance(
                        test_points
                    )
                    row[variance] = estimate.total
                row["mean_grouped"] = estimate.mean
                out[(k, n_trees)] = row
    return out


def summarize(replicates: list[dict]) -> list[dict]:
    z = float(norm.ppf(1 - ALPHA / 2))
    rows = []
    for k in SUBSAMPLE_SIZES:
        for n_trees in TREE_COUNTS:
            reps = [rep[(k, n_trees)] for rep in replicates]
            means = np.stack([r["mean"] for r in reps])
            grouped_means = np.stack([r["mean_grouped"] for r in reps])
            estimators = {}
            for name in ESTIMATORS:
                base = grouped_means if name in ("internal", "internal_corrected") else means
                estimators[name] = score_intervals(base, np.stack([r[name] for r in reps]), z)
            seconds = {
                name: float(np.median([r[f"seconds_{name}"] for r in reps]))
                for name in ("ours", "ours_calibrated", *FORESTCI)
            }
            rows.append(
                {
                    "subsample_size": k,
                    "n_trees": n_trees,
                    "n_trees_grouped": reps[0]["n_trees_grouped"],
                    "n_groups": reps[0]["n_groups"],
                    "truth_variance": means.var(axis=0, ddof=1),
                    "truth_variance_grouped": grouped_means.var(axis=0, ddof=1),
                    "estimators": estimators,
                    "median_seconds": seconds,
                    "speedup_vs_forestci": seconds["forestci"] / seconds["ours"],
                    "speedup_vs_forestci_calibrated": (
                        seconds["forestci_calibrated"] / seconds["ours"]
                    ),
                    "speedup_calibrated_vs_forestci_calibrated": (
                        seconds["forestci_calibrated"] / seconds["ours_calibrated"]
                    ),
                }
            )
    return rows


def summary_of(rows: list[dict]) -> dict:
    per_setting = [
        {
            "subsample_size": row["subsample_size"],
            "n_trees": row["n_trees"],
            "ratio": {name: row["estimators"][name]["ratio"] for name in ESTIMATORS},
            "coverage": {name: row["estimators"][name]["coverage"] for name in ESTIMATORS},
            "speedup_vs_forestci": row["speedup_vs_forestci"],
            "speedup_vs_forestci_calibrated": row["speedup_vs_forestci_calibrated"],
        }
        for row in rows
    ]
    coverage: dict = {}
    for row in rows:
        for name in ESTIMATORS:
            by_k = coverage.setdefault(name, {}).setdefault(str(row["subsample_size"]), {})
            by_k[str(row["n_trees"])] = row["estimators"][name]["coverage"]
    return {
        "coverage": coverage,
        "default_variant": default_variant(rows),
        "goal": {"coverage_within": GOAL, "at_trees_at_least": 500},
        "speedup_calibrated_vs_forestci_calibrated": float(
            np.median([row["speedup_calibrated_vs_forestci_calibrated"] for row in rows])
        ),
        "settings": per_setting,
        "speedup_vs_forestci": float(np.median([row["speedup_vs_forestci"] for row in rows])),
        "speedup_vs_forestci_calibrated": float(
            np.median([row["speedup_vs_forestci_calibrated"] for row in rows])
        ),
    }


def default_variant(rows: list[dict]) -> str:
    """The ungrouped variant whose worst coverage at >= 500 trees is nearest 95%.

    The grouped estimators grow a different forest, so they are not candidates for the default.
    """
    kept = [row for row in rows if row["n_trees"] >= 500]

    def worst_miss(name: str) -> float:
        return max(abs(row["estimators"][name]["coverage"] - 0.95) for row in kept)

    return min(UNGROUPED, key=worst_miss)


def print_table(rows: list[dict]) -> None:
    header = f"{'k':>4} {'B':>5} " + " ".join(f"{name:>22}" for name in ESTIMATORS)
    print(header + f" {'speedup':>8}")
    for row in rows:
        scores = [row["estimators"][name] for name in ESTIMATORS]
        cells = [f"{s['ratio']:>10.2f}x {100 * s['coverage']:>9.1f}%" for s in scores]
        print(
            f"{row['subsample_size']:>4} {row['n_trees']:>5} "
            + " ".join(cells)
            + f" {row['speedup_vs_forestci']:>7.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=200, help="training sets R")
    parser.add_argument("--quick", action="store_true", help="smoke run with R=6")
    parser.add_argument("--workers", type=int, default=1, help="processes over replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="default: explain_vforest[_quick].json")
    args = parser.parse_args()
    n_reps = 6 if args.quick else args.replicates
    output = args.output or RESULT.with_stem(RESULT.stem + ("_quick" if args.quick else ""))

    test_points = make_friedman1(n_samples=N_TEST, random_state=TEST_SEED)[0]
    start = time.perf_counter()
    replicates = []
    with track_progress("replicates", total=n_reps) as bar:
        jobs = Parallel(n_jobs=args.workers, return_as="generator")(
            delayed(run_replicate)(rep, test_points, args.seed) for rep in range(n_reps)
        )
        for result in jobs:
            replicates.append(result)
            bar.advance(1, elapsed_s=time.perf_counter() - start)
    rows = summarize(replicates)
    print_table(rows)
    payload = {
        "benchmark": "explain_vforest",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "threads": 1,
            "workers": args.workers,
        },
        "config": {
            "data": "make_friedman1",
            "n_train": N_TRAIN,
            "noise": NOISE,
            "subsample_sizes": SUBSAMPLE_SIZES,
            "tree_counts": TREE_COUNTS,
            "replicates": n_reps,
            "n_test_points": N_TEST,
            "test_seed": TEST_SEED,
            "seed": args.seed,
            "alpha": ALPHA,
            "estimators": ESTIMATORS,
            "variance_scored": "total = sampling + monte_carlo (Var_b(t_b) / B)",
            "forestci_input": "our ij_v forest's trees and in-bag counts (dense), same test set",
            "grouped_truth": "internal estimators are scored against the grouped forest",
            "wall_seconds": time.perf_counter() - start,
        },
        "settings": rows,
        "summary": summary_of(rows),
    }
    atomic_write_text(output, json.dumps(to_jsonable(payload), indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
