"""Routing quality on the RouterBench subset: batch vs per-query, robust vs not, allocation.

Three comparisons, each over several seeds (query splits, batch orders, estimator seeds):

1. Batch-level MILP routing vs per-query routing (argmax p_hat - lam * cost, lam calibrated on
   training traffic to the same average budget) under random, task-skewed and adversarial
   streams. The per-query router is scored clipped to each batch's hard budget (unanswered =
   wrong), and its raw overspend is recorded.
2. Robust (box kappa and budgeted Gamma, chosen on a validation split) vs non-robust batch
   routing, per quality estimator.
3. Offline GPU instance allocation (MILP over training batches) vs proportional allocation, for
   the six open-weight models. RouterBench has no serving facts, so GPUs per instance follow the
   fp16 weights on 80 GB GPUs (7B and 13B: 1; 34B and 8x7B: 2; 70B: 4) and every instance serves
   4 queries per window; 8 GPUs in all. These are stated assumptions, not measurements.

    .venv/bin/python benchmarks/route/bench_quality.py [--seeds 5] [--quick]

Writes benchmarks/results/route_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from itertools import product
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from winnow.common.config import load_config
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.route.allocate import allocate_instances, proportional_allocation
from winnow.route.assign import assign_batch
from winnow.route.batches import make_batches
from winnow.route.evaluate import score_batch, score_stream
from winnow.route.jobs import RouteEvalConfig, Traffic, calibrate, prepare_traffic, run_stream

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_quality.json"
ROUTERS = (
    "batch",
    "batch robust (box)",
    "batch robust (budgeted)",
    "per-query",
    "per-query clipped",
)
OPEN_MODELS = {  # model -> GPUs per instance (fp16 weights on 80 GB GPUs; an assumption)
    "mistralai/mistral-7b-chat": 1,
    "WizardLM/WizardLM-13B-V1.2": 1,
    "zero-one-ai/Yi-34B-Chat": 2,
    "meta/code-llama-instruct-34b-chat": 2,
    "mistralai/mixtral-8x7b-chat": 2,
    "meta/llama-2-70b-chat": 4,
}
CONCURRENCY, TOTAL_GPUS = 4, 8


def routing_rows(config: RouteEvalConfig, quiet: bool) -> tuple[list[dict], tuple[Traffic, ...]]:
    train, val, test = prepare_traffic(config, quiet=True)
    rows = []
    for level in config.budget_levels:
        knobs = calibrate(level, train, val, config)
        for stream, router in product(config.streams, ROUTERS):
            score = run_stream(router, test, stream, knobs, config)
            rows.append(
                {
                    "seed": config.seed,
                    "estimator": config.estimator.kind,
                    "stream": stream,
                    "budget_level": level,
                    "router": router,
                    "kappa": knobs.kappa,
                    "gamma": knobs.gamma,
                    **score.__dict__,
                }
            )
    return rows, (train, val, test)


def open_model_columns(models: tuple[str, ...]) -> np.ndarray:
    return np.array([models.index(name) for name in OPEN_MODELS])


def allocation_row(train: Traffic, test: Traffic, columns: np.ndarray, seed: int) -> dict:
    """Plan instances on training batches; score both plans on test batches (true outcomes)."""
    gpus = np.array(list(OPEN_MODELS.values()))
    slots = np.full(len(gpus), CONCURRENCY)
    plan_batches = make_batches("random", len(train.p_hat), 50, seed)
    planned = allocate_instances(
        [train.p_hat[b][:, columns] for b in plan_batches], gpus, slots, TOTAL_GPUS
    )
    free_choice = train.p_hat[:, columns].argmax(axis=1)
    share = np.bincount(free_choice, minlength=len(columns)) + 1e-9
    proportional = proportional_allocation(share, gpus, TOTAL_GPUS)
    accuracy = {}
    for plan in (planned, proportional):
        capacity = plan.instances * slots
        outcomes, unanswered = [], 0
        for rows in make_batches("random", len(test.p_hat), 50, seed):
            quality, cost = test.p_hat[rows][:, columns], test.cost[rows][:, columns]
            choice = _serve(quality, cost, capacity)
            unanswered += int((choice < 0).sum())
            outcomes.append(
                score_batch(choice, test.truth[rows][:, columns], cost, capacity, np.inf)
            )
        accuracy[plan.method] = score_stream(outcomes, unanswered).accuracy
    return {
        "seed": seed,
        "milp_instances": planned.instances.tolist(),
        "proportional_instances": proportional.instances.tolist(),
        "milp_accuracy": accuracy["milp"],
        "proportional_accuracy": accuracy["proportional"],
        "gain": accuracy["milp"] - accuracy["proportional"],
    }


def _serve(quality: np.ndarray, cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Batch routing under capacity only; queries beyond total capacity wait (unanswered)."""
    if capacity.sum() == 0:
        return np.full(len(quality), -1)
    return assign_batch(quality, cost, capacity, None, defer_infeasible=True).choice


def summarise(rows: list[dict], allocation: list[dict], estimators, streams, levels) -> dict:
    def stats(values):
        values = np.asarray(values, dtype=float)
        return {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }

    def pick(**match):
        return [r for r in rows if all(r[k] == v for k, v in match.items())]

    batch_vs_per_query = {}
    for stream, level in product(streams, levels):
        per_seed = {}
        for router in ("batch", "per-query clipped", "per-query"):
            per_seed[router] = pick(
                estimator="knn", stream=stream, budget_level=level, router=router
            )
        batch_vs_per_query[f"{stream}@{level}"] = {
            "batch_accuracy": stats([r["accuracy"] for r in per_seed["batch"]]),
            "per_query_clipped_accuracy": stats(
                [r["accuracy"] for r in per_seed["per-query clipped"]]
            ),
            "gain": stats(
                [
                    b["accuracy"] - c["accuracy"]
                    for b, c in zip(per_seed["batch"], per_seed["per-query clipped"], strict=True)
                ]
            ),
            "per_query_raw_accuracy": stats([r["accuracy"] for r in per_seed["per-query"]]),
            "per_query_raw_overspend_usd": stats([r["overspend"] for r in per_seed["per-query"]]),
            "per_query_raw_batches_over_budget": stats(
                [r["batches_over_budget"] for r in per_seed["per-query"]]
            ),
        }
    robust_gain = {}
    for estimator in estimators:
        nominal = pick(estimator=estimator, router="batch")
        robust_gain[estimator] = {
            variant: stats(
                [
                    r["accuracy"] - n["accuracy"]
                    for r, n in zip(pick(estimator=estimator, router=router), nominal, strict=True)
                ]
            )
            for variant, router in (
                ("box", "batch robust (box)"),
                ("budgeted", "batch robust (budgeted)"),
            )
        }
    return {
        "batch_vs_per_query_knn": batch_vs_per_query,
        "robust_minus_nominal_accuracy": robust_gain,
        "allocation_gain": stats([a["gain"] for a in allocation]),
        "allocation_accuracy": {
            "milp": stats([a["milp_accuracy"] for a in allocation]),
            "proportional": stats([a["proportional_accuracy"] for a in allocation]),
        },
    }


def build_payload(rows, allocation, seeds, estimators, levels, streams) -> dict:
    done = {row["seed"] for row in rows}
    return {
        "benchmark": "route_quality",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {
            "seeds": len(seeds),
            "seeds_finished": len(done),
            "estimators": estimators,
            "budget_levels": levels,
            "streams": streams,
            "features": "tfidf",
            "batch_size": 50,
            "capacity_share": 0.25,
            "allocation": {
                "gpus_per_instance": OPEN_MODELS,
                "concurrency": CONCURRENCY,
                "total_gpus": TOTAL_GPUS,
            },
        },
        "rows": rows,
        "allocation": allocation,
        "summary": summarise(rows, allocation, estimators, streams, levels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 seed, knn only, one level")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    estimators = ["knn"] if args.quick else ["knn", "logistic", "mf"]
    levels = [0.25] if args.quick else [0.1, 0.25, 0.5]
    streams = ["random", "task", "adversarial"]
    rows, allocation = [], []
    with threadpool_limits(1), track_progress("route quality", len(seeds) * len(estimators)) as bar:
        for seed, estimator in product(seeds, estimators):
            config = load_config(
                RouteEvalConfig,
                {
                    "seed": seed,
                    "estimator": {"kind": estimator},
                    "budget_levels": levels,
                    "streams": streams,
                },
            )
            new_rows, (train, _, test) = routing_rows(config, quiet=True)
            rows += new_rows
            if estimator == "knn":
                from winnow.route.datasets import load_routerbench

                columns = open_model_columns(load_routerbench("test").models)
                allocation.append(allocation_row(train, test, columns, seed))
            # Written after every seed x estimator, so a long run cut short keeps what it finished.
            payload = build_payload(rows, allocation, seeds, estimators, levels, streams)
            atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
            bar.advance(1, seed=seed, estimator=estimator)
    print(json.dumps(payload["summary"], indent=1))


if __name__ == "__main__":
    main()
