"""Solve time of the batch assignment: winnow's solvers vs scipy's plain LP relaxation and MILP.

Instances follow REFERENCES.md (route): m = 11 models, capacity 25% of the batch per model, one
budget row. Model skill ~ U(0.3, 0.9) and ``quality = clip(skill + N(0, 0.15), 0, 1)``; price per
model ~ lognormal(-6, 1) USD and ``cost = price * lognormal(0, 0.3)`` per query; the budget sits
40% of the way from the cheapest assignment (each query's cheapest model) to the best-quality
one (each query's best model). The robust solve adds ``sigma ~ U(0.02, 0.15)`` and gamma = 10.

Timed on the same arrays, in one process, one thread (threadpoolctl; HiGHS runs serially):

- ``milp``: :func:`assign_batch` at its default ``mip_rel_gap`` (1e-4 since issue 19; 1e-5 before);
- ``milp_exact``: the same with ``mip_rel_gap=0`` (HiGHS' absolute gap 1e-6);
- ``lp_round``: the rounded LP relaxation;
- ``budgeted_robust``: :func:`assign_budgeted_robust`, gamma = 10, default gap;
- ``lp_highs``: ``scipy.optimize.linprog(method="highs")`` on the LP relaxation in the textbook
  sparse formulation (n * m columns; n assignment, m capacity and 1 budget rows): the reference;
- ``naive_milp`` (1,000 x 11 only): ``scipy.optimize.milp`` on that formulation at HiGHS' default
  gap (1e-4), the program REFERENCES timed at 1.7 s.

Each method is timed ``repeats`` times per seed (3 at 1,000 queries, 1 at 10,000) and the fastest
run counts; the summary takes the median over seeds, and ratios divide medians by ``lp_highs``'s.

Small batches, as the evaluation pipeline solves them by the thousand: 50 x 11 with
``quality ~ U(0, 1)``, ``cost ~ lognormal(-6, 1)``, capacity 13 per model and a budget of 3x the
cheapest assignment, :func:`assign_batch` with ``defer_infeasible=True`` against ``milp`` on the
textbook formulation at the same gap (the default). Each of ``--small-batches`` batches is solved
once by each; the summary gives the median and mean per call.

Hard instances (``hard`` in the JSON; built by ``solve_instances.py``, whose docstring gives the
recipes): the batches users send, where HiGHS can take minutes. Family ``predicted_<estimator>_
<data set>`` takes the kNN, logistic and matrix-factorisation estimates of the RouterBench (11
models) and RouteLLM (2 models, costs from text length) test queries with their costs, resampled
to 50, 1,000 and 10,000 queries, at budget levels 0.1-0.9 (of the way from the cheapest to the
best-predicted assignment) and capacity shares 25%, 50% and 100% per model; ``knapsack_like``
takes RouterBench costs with quality rising in the log of the cost, capacity 25%, the same
levels, and the absolute budget $0.8437 at 1,000 queries, seed 0. Each is solved once by
:func:`assign_batch` with ``defer_infeasible=True`` and ``time_limit=--time-limit`` (10 s), one
thread; a solve hits the limit when it stops there unproven (``time_limit_hit``). ``hard``
holds every row, and per (family, n) and overall the count, p50/p95/max ms, the largest proven
gap and the time-limit hits. The summary adds ``hard_max_ms_1000x11``, ``hard_max_ms_10000x11``,
``hard_p95_ms_1000x11`` (over every instance of that many queries, whatever its model count),
``hard_max_gap`` and ``hard_time_limit_hits`` (over all hard instances).

    .venv/bin/python benchmarks/route/bench_solve.py [--seeds 5] [--small-batches 200] [--quick]
        [--only easy|hard] [--hard-sizes 50 1000 10000] [--time-limit 10] [--out PATH]

Writes benchmarks/results/route_solve.json (``--out`` elsewhere; ``--quick`` to a temp dir).
``--only`` runs one part and merges it into the file already at the output path, keeping the
other part's figures. Results are written after every hard solve, so a run cut short keeps
what it finished.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from threadpoolctl import threadpool_limits

from winnow.common.progress import track_progress
from winnow.common.report import markdown_table
from winnow.common.runs import atomic_write_text
from winnow.route.assign import assign_batch, check_assignment
from winnow.route.highs_output import run_highs
from winnow.route.robust import assign_budgeted_robust

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_instances import (  # benchmarks are scripts, not a package
    DATASETS,
    ESTIMATORS,
    LEVELS,
    SHARES,
    SIZES,
    SLOW_BUDGET,
    knapsack_instances,
    labels,
    predicted_instances,
)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_solve.json"
MODELS = 11
GAMMA = 10.0
GOAL_MS = {1000: 50.0, 10000: 1000.0}
SMALL = 50  # queries in a small batch
# Small batches: assign_batch and the plain MILP both at the solver's default gap.
SMALL_GAP = inspect.signature(assign_batch).parameters["mip_rel_gap"].default
WINNOW = ("milp", "milp_exact", "lp_round", "budgeted_robust")


def instance(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.3, 0.9, MODELS)
    quality = np.clip(skill + rng.normal(0.0, 0.15, (n, MODELS)), 0.0, 1.0)
    price = np.exp(rng.normal(-6.0, 1.0, MODELS))
    cost = price * np.exp(rng.normal(0.0, 0.3, (n, MODELS)))
    cheapest = cost.min(axis=1).sum()
    best_quality = cost[np.arange(n), quality.argmax(axis=1)].sum()
    return {
        "quality": quality,
        "cost": cost,
        "capacity": np.full(MODELS, int(np.ceil(0.25 * n))),
        "budget": float(cheapest + 0.4 * (best_quality - cheapest)),
        "sigma": rng.uniform(0.02, 0.15, (n, MODELS)),
    }


def textbook(batch: dict) -> tuple[sp.csr_array, np.ndarray, np.ndarray]:
    """Rows: n assignment equalities, m capacities, 1 budget; columns: x[q, j] row-major."""
    n, m = batch["quality"].shape
    v = n * m
    rows = np.concatenate([np.repeat(np.arange(n), m), n + np.tile(np.arange(m), n), [n + m] * v])
    cols = np.tile(np.arange(v), 3)
    values = np.concatenate([np.ones(2 * v), batch["cost"].ravel()])
    matrix = sp.csr_array((values, (rows, cols)), shape=(n + m + 1, v))
    lower = np.concatenate([np.ones(n), np.full(m + 1, -np.inf)])
    upper = np.concatenate([np.ones(n), batch["capacity"], [batch["budget"]]])
    return matrix, lower, upper


def lp_highs(batch: dict) -> dict:
    matrix, _, upper = textbook(batch)
    n = len(batch["quality"])
    result = run_highs(  # HiGHS's stdout captured, as around winnow's own solves
        linprog,
        -batch["quality"].ravel(),
        A_ub=matrix[n:],
        b_ub=upper[n:],
        A_eq=matrix[:n],
        b_eq=upper[:n],
        bounds=(0, 1),
        method="highs",
    )
    return {"objective": -result.fun}


def naive_milp(batch: dict, options: dict | None = None) -> dict:
    matrix, lower, upper = textbook(batch)
    v = matrix.shape[1]
    result = run_highs(
        milp,
        -batch["quality"].ravel(),
        integrality=np.ones(v),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(matrix, lower, upper),
        options=options,
    )
    return {"objective": -result.fun, "mip_gap": result.mip_gap}


def winnow(method: str, batch: dict) -> dict:
    args = (batch["quality"], batch["cost"], batch["capacity"], batch["budget"])
    if method == "budgeted_robust":
        result = assign_budgeted_robust(args[0], batch["sigma"], *args[1:], GAMMA)
    else:
        gap = {"mip_rel_gap": 0.0} if method == "milp_exact" else {}
        result = assign_batch(*args, method="lp_round" if method == "lp_round" else "milp", **gap)
    assert not check_assignment(result.choice, *args[1:]), f"{method} broke a constraint"
    return {"objective": result.objective, "bound": result.bound, "mip_gap": result.mip_gap}


def timed(solve, repeats: int) -> dict:
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        outcome = solve()
        best = min(best, time.perf_counter() - started)
    return {"ms": 1000 * best, **outcome}


def measure(n: int, seed: int, naive: bool) -> dict:
    batch = instance(n, seed)
    repeats = 3 if n <= 1000 else 1
    row = {"n": n, "m": MODELS, "seed": seed, "budget": batch["budget"], "repeats": repeats}
    for method in WINNOW:
        row[method] = timed(lambda method=method: winnow(method, batch), repeats)
    row["lp_highs"] = timed(lambda: lp_highs(batch), repeats)
    if naive:
        row["naive_milp"] = timed(lambda: naive_milp(batch), 1)
    return row


def small_instance(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cost = rng.lognormal(-6.0, 1.0, (SMALL, MODELS))
    return {
        "quality": rng.uniform(size=(SMALL, MODELS)),
        "cost": cost,
        "capacity": np.full(MODELS, 13),
        "budget": float(3 * cost.min(axis=1).sum()),
    }


def measure_small(count: int) -> dict:
    """Per-call ms of assign_batch and of the plain MILP on ``count`` small batches."""
    times = {"milp": [], "plain_milp": []}
    for seed in range(count):
        batch = small_instance(seed)
        args = [batch[key] for key in ("quality", "cost", "capacity", "budget")]
        started = time.perf_counter()
        result = assign_batch(*args, defer_infeasible=True, mip_rel_gap=SMALL_GAP)
        times["milp"].append(time.perf_counter() - started)
        started = time.perf_counter()
        plain = naive_milp(batch, {"mip_rel_gap": SMALL_GAP})
        times["plain_milp"].append(time.perf_counter() - started)
        assert not result.deferred.size, "a small batch needed deferrals"
        within = 2 * SMALL_GAP * max(1.0, plain["objective"])  # each is within the gap
        assert abs(result.objective - plain["objective"]) <= within, "the solvers disagree"
    return {
        f"{key}_{stat}_ms_{SMALL}x{MODELS}": float(1000 * reduce(values))
        for key, values in times.items()
        for stat, reduce in (("median", np.median), ("mean", np.mean))
    }


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for n in sorted({row["n"] for row in rows}):
        size = f"{n}x{MODELS}"
        group = [row for row in rows if row["n"] == n]
        methods = [key for key in (*WINNOW, "lp_highs", "naive_milp") if key in group[0]]
        median = {key: float(np.median([row[key]["ms"] for row in group])) for key in methods}
        summary[f"solve_ms_{size}"] = median["milp"]
        summary[f"goal_ms_{size}"] = GOAL_MS.get(n)
        summary[f"goal_met_{size}"] = median["milp"] < GOAL_MS.get(n, np.inf)
        for key in methods:
            summary[f"{key}_ms_{size}"] = median[key]
            summary[f"{key}_over_lp_{size}"] = median[key] / median["lp_highs"]
        for key in ("milp", "lp_round", "budgeted_robust"):
            summary[f"{key}_max_mip_gap_{size}"] = max(row[key]["mip_gap"] for row in group)
        summary[f"milp_exact_minus_milp_objective_max_{size}"] = max(
            row["milp_exact"]["objective"] - row["milp"]["objective"] for row in group
        )
        if "naive_milp" in median:
            summary[f"milp_exact_minus_naive_objective_min_{size}"] = min(
                row["milp_exact"]["objective"] - row["naive_milp"]["objective"] for row in group
            )
    return summary


def hard_instances(sizes, seeds, quick: bool) -> tuple[int, Iterator[dict]]:
    """(how many, the instances): knapsack-like first, then every estimator and data set."""
    estimators, datasets = (("knn",), ("routerbench",)) if quick else (ESTIMATORS, DATASETS)
    levels, shares = ((0.5,), (0.25,)) if quick else (LEVELS, SHARES)
    slow = SLOW_BUDGET[0] in sizes and SLOW_BUDGET[1] in seeds
    count = (
        len(sizes) * len(seeds) * len(levels) * (1 + len(estimators) * len(datasets) * len(shares))
    )
    instances = itertools.chain(
        knapsack_instances(sizes, levels, seeds),
        predicted_instances(estimators, datasets, sizes, levels, shares, seeds),
    )
    return count + int(slow), instances


def solve_hard(instance: dict, time_limit: float) -> dict:
    """One timed solve: wall ms, proven gap, and whether the time limit cut it short."""
    args = [instance[key] for key in ("quality", "cost", "capacity", "budget")]
    started = time.perf_counter()
    result = assign_batch(*args, defer_infeasible=True, time_limit=time_limit)
    seconds = time.perf_counter() - started
    assert not check_assignment(result.choice, *args[1:]), f"broke a constraint: {labels(instance)}"
    return {
        **labels(instance),
        "ms": 1000 * seconds,
        "mip_gap": result.mip_gap,
        "optimal": result.optimal,
        "time_limit_hit": result.time_limit_hit or not result.optimal,
        "deferred": int(result.deferred.size),
        "objective": result.objective,
        "bound": result.bound,
    }


def describe(rows: list[dict]) -> dict:
    ms = [row["ms"] for row in rows]
    return {
        "count": len(rows),
        "p50_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "max_ms": float(np.max(ms)),
        "max_gap": float(max(row["mip_gap"] for row in rows)),
        "time_limit_hits": sum(row["time_limit_hit"] for row in rows),
    }


def summarise_hard(rows: list[dict]) -> tuple[dict, list[dict], list[dict]]:
    """(summary keys, one row per family and n, overall rows per n and for all)."""
    keys = sorted({(row["family"], row["n"]) for row in rows})
    families = []
    for family, n in keys:
        group = [row for row in rows if (row["family"], row["n"]) == (family, n)]
        families.append({"family": family, "n": n, "m": group[0]["m"], **describe(group)})
    sizes = sorted({row["n"] for row in rows})
    overall = [
        {"family": "all", "n": n, **describe([r for r in rows if r["n"] == n])} for n in sizes
    ]
    overall.append({"family": "all", "n": "all", **describe(rows)})
    by_size = {row["n"]: row for row in overall}
    summary = {
        "hard_max_ms_1000x11": by_size.get(1000, {}).get("max_ms"),
        "hard_max_ms_10000x11": by_size.get(10000, {}).get("max_ms"),
        "hard_p95_ms_1000x11": by_size.get(1000, {}).get("p95_ms"),
        "hard_max_gap": overall[-1]["max_gap"],
        "hard_time_limit_hits": overall[-1]["time_limit_hits"],
    }
    return summary, families, overall


def solver_files() -> dict:
    """SHA-256 (12 hex digits) of the solver's modules, so a result names the code it timed."""
    folder = Path(inspect.getfile(assign_batch)).parent
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:12]
        for name in ("assign.py", "cores.py", "relaxation.py")
    }


def hard_section(rows: list[dict], config: dict) -> tuple[dict, dict]:
    """``{"hard": section}`` for the JSON, and the summary keys."""
    summary, families, overall = summarise_hard(rows)
    slowest = sorted(rows, key=lambda row: -row["ms"])[:10]
    section = {"config": config, "families": families, "overall": overall, "slowest": slowest}
    return {"hard": {**section, "rows": rows}}, summary


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cores": os.cpu_count(),
        "threads": 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def run_easy(args) -> tuple[dict, dict]:
    """(config and rows, summary keys) of the easy instances and the small batches."""
    seeds = 2 if args.quick else args.seeds or 5
    sizes = [1000] if args.quick else args.sizes
    rows = []
    with track_progress("route solve", total=seeds * len(sizes)) as bar:
        for n in sizes:
            for seed in range(seeds):
                rows.append(measure(n, seed, naive=n <= 1000 and not args.quick))
                bar.advance(1, n=n, milp_ms=rows[-1]["milp"]["ms"])
    small = measure_small(50 if args.quick else args.small_batches)
    config = {
        "models": MODELS,
        "sizes": sizes,
        "seeds": seeds,
        "capacity_share": 0.25,
        "budget_position": 0.4,
        "gamma": GAMMA,
        "repeats": "3 at n <= 1000, else 1; fastest run per seed, median over seeds",
        "small_batches": 50 if args.quick else args.small_batches,
    }
    return {"config": config, "rows": rows}, {**summarise(rows), **small}


def run_hard(args, merge) -> None:
    """Solve every hard instance once; ``merge(section, summary)`` after each solve."""
    seeds = range(1 if args.quick else args.seeds or 2)
    sizes = [50, 1000] if args.quick else args.hard_sizes
    config = {
        "time_limit_s": args.time_limit,
        "sizes": sizes,
        "seeds": len(seeds),
        "budget_levels": [0.5] if args.quick else list(LEVELS),
        "capacity_shares": [0.25] if args.quick else list(SHARES),
        "estimators": ["knn"] if args.quick else list(ESTIMATORS),
        "datasets": ["routerbench"] if args.quick else list(DATASETS),
        "slow_budget": {"n": SLOW_BUDGET[0], "seed": SLOW_BUDGET[1], "usd": SLOW_BUDGET[2]},
        "time_limit_hit": "the solve stopped at its time limit (not proven within the gap)",
        "mip_rel_gap": inspect.signature(assign_batch).parameters["mip_rel_gap"].default,
        "solver_sha256": solver_files(),
        "notes": args.note,
    }
    total, instances = hard_instances(sizes, seeds, args.quick)
    rows = []
    with track_progress("route solve hard", total=total) as bar:
        for instance in instances:
            rows.append(solve_hard(instance, args.time_limit))
            merge(*hard_section(rows, config))
            bar.advance(1, family=instance["family"], n=instance["n"], ms=rows[-1]["ms"])
    _, families, overall = summarise_hard(rows)
    print(markdown_table(families + overall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help="seeds per size (default: easy 5, hard 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="easy")
    parser.add_argument("--hard-sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--small-batches", type=int, default=200, help="50 x 11 batches timed")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per hard solve")
    parser.add_argument(
        "--only", choices=("easy", "hard"), help="run one part, merged into the file at --out"
    )
    parser.add_argument("--out", type=Path, help=f"default {RESULTS}; --quick: a temp dir")
    parser.add_argument("--note", default="", help="recorded in the hard section's config")
    parser.add_argument(
        "--quick", action="store_true", help="2 easy seeds of 1,000 queries, 4 hard instances"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_solve_")) / RESULTS.name if args.quick else None
    out = args.out or scratch or RESULTS
    payload = {}
    if args.only and out.exists():  # keep the other part's figures
        payload = json.loads(out.read_text())
    payload.update({"benchmark": "route_solve", "machine": machine()})
    payload.setdefault("summary", {})

    def merge(section: dict, summary: dict) -> None:
        payload.update(section)
        payload["summary"].update(summary)
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")

    with threadpool_limits(1):
        winnow("milp", instance(200, 99))  # warm-up: imports and first HiGHS calls
        if args.only != "hard":
            merge(*run_easy(args))
        if args.only != "easy":
            run_hard(args, merge)
    print(json.dumps(payload["summary"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
