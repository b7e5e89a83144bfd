"""Routing quality on the RouterBench subset: batch vs per-query, robust vs not, allocation.

Three comparisons, each over several seeds (query splits, batch orders, estimator seeds):

1. Regimes: batch-level MILP routing against per-query routers (argmax p_hat - lam * cost) at
   capacity shares {25%, 50%, 100%} x budget levels x streams (random, task-skewed,
   adversarial) x estimators. The per-query routers: calibrated to the average budget on
   training traffic (raw: it may overspend), matched to the MILP's spend on validation traffic,
   paced online, clipped to each batch's budget, constrained (batch budget and capacities in
   arrival order, falling back to what fits), and oracle-matched to the MILP's test spend (an
   upper bound, never a result). Every knob is chosen on training or validation traffic only.
   ``batch_minus_best_constrained`` compares the MILP with the most accurate per-query router
   that broke no batch budget and no capacity in that replay (picked on the test replay, which
   favours the baseline).
2. Robust (box kappa and budgeted Gamma, chosen on a validation split) vs non-robust batch
   routing, per quality estimator, at 25% capacity.
3. Offline GPU instance allocation (MILP over training batches) vs proportional allocation, for
   the six open-weight models. RouterBench has no serving facts, so GPUs per instance follow the
   fp16 weights on 80 GB GPUs (7B and 13B: 1; 34B and 8x7B: 2; 70B: 4) and every instance serves
   4 queries per window; 8 GPUs in all. These are stated assumptions, not measurements.

    .venv/bin/python benchmarks/route/bench_quality.py [--seeds 3] [--jobs 2] [--quick]

Writes benchmarks/results/route_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from concurrent.futures import ProcessPoolExecutor, as_completed
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
from winnow.route.jobs import RouteEvalConfig, prepare_traffic
from winnow.route.routers import (
    ORACLE_MATCHED,
    Traffic,
    batch_versus_per_query,
    calibrate,
    score_routers,
)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_quality.json"
ROUTERS = (
    "batch",
    "per-query",
    "per-query matched",
    ORACLE_MATCHED,
    "per-query paced",
    "per-query clipped",
    "per-query constrained",
)
ROBUST = ("batch robust (box)", "batch robust (budgeted)")
ROBUST_CAPACITY = 0.25  # the robust comparison runs at this capacity share only
CAPACITY_SHARES = (0.25, 0.5, 1.0)
OPEN_MODELS = {  # model -> GPUs per instance (fp16 weights on 80 GB GPUs; an assumption)
    "mistralai/mistral-7b-chat": 1,
    "WizardLM/WizardLM-13B-V1.2": 1,
    "zero-one-ai/Yi-34B-Chat": 2,
    "meta/code-llama-instruct-34b-chat": 2,
    "mistralai/mixtral-8x7b-chat": 2,
    "meta/llama-2-70b-chat": 4,
}
CONCURRENCY, TOTAL_GPUS = 4, 8


def routing_rows(
    config: RouteEvalConfig, shares
) -> tuple[list[dict], list[dict], tuple[Traffic, ...]]:
    """Every router's score and one comparison row per capacity share x level x stream."""
    train, val, test = prepare_traffic(config, quiet=True)
    rows, comparisons = [], []
    for share, level in product(shares, config.budget_levels):
        at_share = config.model_copy(update={"capacity_share": share})
        robust = share == ROBUST_CAPACITY
        knobs = calibrate(level, train, val, at_share, robust=robust)
        routers = ROUTERS + ROBUST if robust else ROUTERS
        key = {"seed": config.seed, "estimator": config.estimator.kind, "capacity_share": share}
        for stream in config.streams:
            scores = score_routers(routers, test, stream, knobs, at_share)
            where = {**key, "stream": stream, "budget_level": level}
            rows += [
                {**where, "router": router, "kappa": knobs.kappa, "gamma": knobs.gamma,
                 **score.__dict__}
                for router, score in scores.items()
            ]  # fmt: skip
            comparisons.append({**where, **batch_versus_per_query(scores)})
    return rows, comparisons, (train, val, test)


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


def _groups(comparisons: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in comparisons:
        key = (row["capacity_share"], row["budget_level"], row["stream"], row["estimator"])
        groups.setdefault(key, []).append(row)
    return groups


def stats(values) -> dict:
    """Mean and sample sd over seeds (NaN entries, where no baseline qualified, left out)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "n": int(values.size),
    }


def summarise(rows: list[dict], comparisons: list[dict], allocation: list[dict], estimators):
    def pick(**match):
        return [r for r in rows if all(r[k] == v for k, v in match.items())]

    def over_seeds(group: list[dict], key: str) -> dict:
        return stats([np.nan if g[key] is None else g[key] for g in group])

    regimes, gaps = [], {}
    for (share, level, stream, estimator), group in _groups(comparisons).items():
        where = {"capacity_share": share, "budget_level": level, "stream": stream}
        where["estimator"] = estimator
        spends = {
            router: stats([r["spend_per_query"] for r in pick(**where, router=router)])["mean"]
            for router in ROUTERS
        }
        regimes.append(
            {
                **where,
                "seeds": len(group),
                "batch_accuracy": over_seeds(group, "batch"),
                "best_constrained": sorted({str(g["best constrained per-query"]) for g in group}),
                "best_constrained_accuracy": over_seeds(group, "best constrained accuracy"),
                "batch_minus_best_constrained": over_seeds(group, "batch - best constrained"),
                "per_query_matched_accuracy": over_seeds(group, "per-query matched"),
                "oracle_matched_accuracy_upper_bound": over_seeds(group, ORACLE_MATCHED),
                "per_query_paced_accuracy": over_seeds(group, "per-query paced"),
                "spend_per_query": spends,
                "matched_batches_over_budget": over_seeds(
                    group, "per-query matched batches over budget"
                ),
                "matched_capacity_violations": over_seeds(
                    group, "per-query matched capacity violations"
                ),
            }
        )
        gaps[f"cap{share:g}@{level:g}@{stream}@{estimator}"] = regimes[-1][
            "batch_minus_best_constrained"
        ]
    robust_gain = {}
    for estimator in estimators:
        nominal = pick(estimator=estimator, router="batch", capacity_share=ROBUST_CAPACITY)
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
        "regimes": regimes,
        "batch_minus_best_constrained": gaps,
        "robust_minus_nominal_accuracy": robust_gain,
        "allocation_gain": stats([a["gain"] for a in allocation]),
        "allocation_accuracy": {
            "milp": stats([a["milp_accuracy"] for a in allocation]),
            "proportional": stats([a["proportional_accuracy"] for a in allocation]),
        },
    }


def build_payload(rows, comparisons, allocation, seeds, estimators, levels, streams) -> dict:
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
            "capacity_shares": list(CAPACITY_SHARES),
            "robust_capacity_share": ROBUST_CAPACITY,
            "allocation": {
                "gpus_per_instance": OPEN_MODELS,
                "concurrency": CONCURRENCY,
                "total_gpus": TOTAL_GPUS,
            },
        },
        "rows": rows,
        "allocation": allocation,
        "summary": summarise(rows, comparisons, allocation, estimators),
    }


def one_pair(seed: int, estimator: str, levels, streams, shares) -> tuple[list, list, list]:
    """Rows, comparisons and (for kNN) the allocation row of one seed x estimator, on one
    thread."""
    with threadpool_limits(1):
        config = load_config(
            RouteEvalConfig,
            {
                "seed": seed,
                "estimator": {"kind": estimator},
                "budget_levels": levels,
                "streams": streams,
            },
        )
        rows, comparisons, (train, _, test) = routing_rows(config, shares)
        allocation = []
        if estimator == "knn":
            from winnow.route.datasets import load_routerbench

            columns = open_model_columns(load_routerbench("test").models)
            allocation.append(allocation_row(train, test, columns, seed))
    return rows, comparisons, allocation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="seed x estimator pairs at once")
    parser.add_argument("--quick", action="store_true", help="1 seed, knn only, one level")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    estimators = ["knn"] if args.quick else ["knn", "logistic", "mf"]
    levels = [0.25] if args.quick else [0.1, 0.25, 0.5]
    streams = ["random", "task", "adversarial"]
    shares = (0.25,) if args.quick else CAPACITY_SHARES
    rows, comparisons, allocation = [], [], []
    pairs = list(product(seeds, estimators))
    with (
        ProcessPoolExecutor(args.jobs) as pool,
        track_progress("route quality", len(pairs)) as bar,
    ):
        futures = {pool.submit(one_pair, s, e, levels, streams, shares): (s, e) for s, e in pairs}
        for future in as_completed(futures):
            new_rows, new_comparisons, new_allocation = future.result()
            rows += new_rows
            comparisons += new_comparisons
            allocation += new_allocation
            # Written after every seed x estimator, so a long run cut short keeps what it finished.
            payload = build_payload(
                rows, comparisons, allocation, seeds, estimators, levels, streams
            )
            atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
            seed, estimator = futures[future]
            bar.advance(1, seed=seed, estimator=estimator)
    print(json.dumps(payload["summary"], indent=1))


if __name__ == "__main__":
    main()
