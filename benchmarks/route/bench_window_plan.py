"""Where the routing proxy's planning time goes: features, estimates, and the MILP per gap.

    .venv/bin/python benchmarks/route/bench_window_plan.py

One thread. A kNN / TF-IDF quality model fitted as `winnow route fit` does (RouterBench training
queries); windows of 8, 18 and 50 random RouterBench test prompts; each model's cost is its
largest recorded cost, which is what the proxy reserves, so every request costs the same on a
model; capacity 13 per model; the budget is 1.5x the cheapest plan. Each window is planned by
`window_plan.plan_window` at gaps 1e-5 (the solver's default), 1e-4, 1e-3 (the proxy's
default) and 1e-2, and the expected correct answers are compared with the 1e-5 plan.

Writes benchmarks/results/route_window_plan.json.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from winnow.common.config import load_config
from winnow.common.runs import atomic_write_text
from winnow.route.datasets import load_routerbench
from winnow.route.fitted import RouteFitConfig, fit_quality_model
from winnow.route.window_plan import plan_window

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_window_plan.json"
SIZES, GAPS, WINDOWS, CAPACITY = (8, 18, 50), (1e-5, 1e-4, 1e-3, 1e-2), 20, 13


def main() -> None:
    with threadpool_limits(1):
        fitted, _ = fit_quality_model(load_config(RouteFitConfig, {}), quiet=True)
        test = load_routerbench("test")
        worst = test.cost.max(axis=0)
        rng = np.random.default_rng(0)
        rows = []
        for n in SIZES:
            timings = {"features_ms": [], "estimates_ms": []}
            timings |= {f"plan_ms@{g:g}": [] for g in GAPS}
            loss = {g: [] for g in GAPS}
            for _ in range(WINDOWS):
                prompts = [test.prompts[i] for i in rng.choice(len(test.prompts), n, False)]
                started = time.perf_counter()
                features = fitted.features(prompts)
                featured = time.perf_counter()
                p_hat = np.clip(fitted.estimator.predict(features)[0], 0, 1)
                timings["features_ms"].append(1000 * (featured - started))
                timings["estimates_ms"].append(1000 * (time.perf_counter() - featured))
                cost = np.tile(worst, (n, 1))
                budget = 1.5 * cost.min(axis=1).sum()
                value = {}
                for gap in GAPS:
                    started = time.perf_counter()
                    orders = plan_window(
                        p_hat, cost, np.full(len(worst), CAPACITY), budget, 5.0, mip_rel_gap=gap
                    )
                    timings[f"plan_ms@{gap:g}"].append(1000 * (time.perf_counter() - started))
                    value[gap] = sum(p_hat[i, o[0]] for i, o in enumerate(orders) if o)
                for gap in GAPS:
                    loss[gap].append(value[GAPS[0]] - value[gap])
            rows.append(
                {
                    "window": n,
                    **{
                        name: {"median": float(np.median(v)), "max": float(np.max(v))}
                        for name, v in timings.items()
                    },
                    "expected_correct_lost_vs_1e-5": {
                        f"{g:g}": float(np.mean(loss[g])) for g in GAPS
                    },
                }
            )
    payload = {
        "benchmark": "route_window_plan",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {"windows_per_size": WINDOWS, "capacity": CAPACITY, "budget": "1.5x cheapest"},
        "summary": {"windows": rows},
    }
    atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["summary"], indent=1))


if __name__ == "__main__":
    main()
