"""Claim: the V-forest's 95% intervals cover 93-97% of the time at >= 500 trees, on any function.

The harness of :mod:`winnow.explain.coverage` on three known functions (Friedman-1, a step
function with an interaction, a smooth periodic one), noise sd 1:

- grid: n = 500, k in {25, 50, 100}, B in {500, 1000};
- n sweep: Friedman-1, n in {250, 1000}, k = 50, B in {500, 1000}.

Variants scored on the same forest: winnow's ``ij_v`` and ``ij_v_calibrated``, forestci's IJ-U
uncalibrated and calibrated; with a different estimand (a new Y), MAPIE's
jackknife+-after-bootstrap and quantile-forest, each with 100 trees of k rows. ``summary``:
coverage per function -> n -> k -> B -> variant, the range of each variant's coverage at
B >= 500, and the share of settings inside [0.93, 0.97].

    .venv/bin/python benchmarks/explain/bench_coverage.py --workers 2     # R = 100
    .venv/bin/python benchmarks/explain/bench_coverage.py --quick         # R = 10, _quick.json
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

from winnow.common.runs import atomic_path, atomic_write_text, to_jsonable  # noqa: E402
from winnow.explain.coverage import (  # noqa: E402
    CoverageJobConfig,
    coverage_table,
    plot_coverage,
    run_coverage,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
GOAL = (0.93, 0.97)


def configs(replicates: int, workers: int) -> dict[str, CoverageJobConfig]:
    common = {"replicates": replicates, "n_jobs": workers, "tree_counts": [500, 1000]}
    return {
        "grid": CoverageJobConfig(**common),
        "n_sweep": CoverageJobConfig(
            **common, functions=["friedman1"], n_train=[250, 1000], subsample_sizes=[50]
        ),
    }


def summary_of(rows: list[dict]) -> dict:
    ours = [r for r in rows if r["estimand"] == "E[forest prediction]" and r["n_trees"] >= 500]
    variants = {}
    for name in dict.fromkeys(r["variant"] for r in ours):
        values = [r["coverage"] for r in ours if r["variant"] == name]
        inside = [GOAL[0] <= v <= GOAL[1] for v in values]
        variants[name] = {
            "min": min(values),
            "max": max(values),
            "share_within_goal": sum(inside) / len(inside),
            "settings": len(values),
        }
    peers = {
        name: [r["coverage"] for r in rows if r["variant"] == name]
        for name in dict.fromkeys(r["variant"] for r in rows if r["ratio"] is None)
    }
    return {
        "goal": {"coverage_within": GOAL, "at_trees_at_least": 500},
        "variants": variants,
        "y_interval_peers": peers,
        "coverage": coverage_table(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="processes over replicates")
    parser.add_argument("--quick", action="store_true", help="R = 10, writes *_quick.json")
    args = parser.parse_args()
    replicates = 10 if args.quick else args.replicates
    started = time.perf_counter()
    parts = {}
    for part, config in configs(replicates, args.workers).items():
        print(f"== {part}", flush=True)
        parts[part] = run_coverage(config)
    rows = [row | {"part": part} for part, part_rows in parts.items() for row in part_rows]
    summary = summary_of(rows)
    name = "explain_coverage_quick" if args.quick else "explain_coverage"
    payload = {
        "benchmark": "explain_coverage",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            **{part: c.model_dump() for part, c in configs(replicates, args.workers).items()},
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / f"{name}.png") as tmp:
        plot_coverage(parts["grid"], 0.05).savefig(tmp, format="png", dpi=110)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(to_jsonable(payload), indent=2) + "\n")
    print(json.dumps(to_jsonable(summary["variants"]), indent=1))


if __name__ == "__main__":
    main()
