"""Offline allocation of GPU instances to models, planned on a sample of traffic.

Given, per model, the GPUs one instance needs and the queries one instance serves per window
(its concurrency), and a GPU total, choose integer instance counts that maximise the expected
quality a batch router can reach on a traffic sample. The plan is one mixed-integer program over
all sample batches at once (HiGHS through ``scipy.optimize.milp``)::

    max  sum_b,q,m p[b,q,m] x[b,q,m]
    s.t. sum_m x[b,q,m] + u[b,q] = 1            every query served once or left unserved (u)
         sum_q x[b,q,m] <= concurrency_m I_m    per batch and model
         sum_m gpus_m I_m <= total_gpus
         sum_q,m cost[b,q,m] x[b,q,m] <= budget  per batch (optional)
         x, u in [0, 1], I_m >= 0 integer

Only ``I`` is integer; ``x`` is relaxed to ``[0, 1]``. The plan decides instance counts, and for
fixed counts the relaxed routing value is an upper bound that a basic solution reaches with at
most one fractional query per coupling row (capacities and budget) per batch, so the relaxation
changes which counts win only when batches are tiny.

The comparison point is :func:`proportional_allocation`, which splits the GPUs in proportion to
the traffic each model would win if capacity were free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from winnow.route.exceptions import RouteInputError
from winnow.route.highs_output import run_highs

__all__ = ["Allocation", "allocate_instances", "proportional_allocation"]


@dataclass(frozen=True)
class Allocation:
    """Instance counts per model and what they cost and bring on the planning sample;
    ``time_limit_hit``: the MILP stopped at its time limit, ``mip_gap`` is what it proved."""

    instances: np.ndarray
    gpus_used: int
    planned_quality: float
    method: str
    mip_gap: float = 0.0
    time_limit_hit: bool = False


def allocate_instances(
    quality_batches: Sequence[np.ndarray],
    gpus_per_instance: np.ndarray,
    concurrency: np.ndarray,
    total_gpus: int,
    cost_batches: Sequence[np.ndarray] | None = None,
    budget: float | None = None,
    time_limit: float | None = 60.0,
) -> Allocation:
    """Instance counts maximising expected served quality on the sample batches.

    Parameters
    ----------
    quality_batches : list of ``[n_b, m]`` predicted P(correct) for each sample batch.
    gpus_per_instance, concurrency : ``[m]`` positive integers.
    total_gpus : GPUs available in all.
    cost_batches, budget : optional ``[n_b, m]`` costs and a per-batch budget.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    gpus = _positive_ints(gpus_per_instance, "gpus_per_instance")
    slots = _positive_ints(concurrency, "concurrency")
    m = len(gpus)
    if len(slots) != m or any(q.shape[1] != m for q in quality_batches):
        raise RouteInputError("quality batches, gpus_per_instance and concurrency disagree on m")
    sizes = [len(q) for q in quality_batches]
    n_total = sum(sizes)
    n_x = n_total * m
    n_vars = n_x + n_total + m  # x, unserved u, instances I
    objective = np.concatenate(
        [-np.concatenate([q.ravel() for q in quality_batches]), np.zeros(n_total + m)]
    )
    rows, cols, vals, lower, upper = [], [], [], [], []
    row = 0
    offset = 0
    for b, size in enumerate(sizes):
        queries = np.arange(size)
        x_index = (offset + queries)[:, None] * m + np.arange(m)[None, :]
        # each query: sum_m x + u = 1
        rows += [np.repeat(row + queries, m), row + queries]
        cols += [x_index.ravel(), n_x + offset + queries]
        vals += [np.ones(size * m), np.ones(size)]
        lower.append(np.ones(size))
        upper.append(np.ones(size))
        row += size
        # per model: sum_q x - concurrency_m I_m <= 0
        rows += [np.tile(row + np.arange(m), size), row + np.arange(m)]
        cols += [x_index.ravel(), n_x + n_total + np.arange(m)]
        vals += [np.ones(size * m), -slots.astype(float)]
        lower.append(np.full(m, -np.inf))
        upper.append(np.zeros(m))
        row += m
        if budget is not None and cost_batches is not None:
            rows.append(np.full(size * m, row))
            cols.append(x_index.ravel())
            vals.append(np.asarray(cost_batches[b], dtype=float).ravel())
            lower.append([-np.inf])
            upper.append([budget])
            row += 1
        offset += size
    rows.append(np.full(m, row))
    cols.append(n_x + n_total + np.arange(m))
    vals.append(gpus.astype(float))
    lower.append([-np.inf])
    upper.append([total_gpus])
    row += 1
    matrix = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(row, n_vars)
    ).tocsr()
    integrality = np.concatenate([np.zeros(n_x + n_total), np.ones(m)])
    upper_bounds = np.concatenate([np.ones(n_x + n_total), total_gpus // gpus])
    result = run_highs(
        milp,
        objective,
        constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
        integrality=integrality,
        bounds=Bounds(np.zeros(n_vars), upper_bounds),
        options={"time_limit": time_limit} if time_limit else None,
    )
    if result.x is None:
        raise RouteInputError(f"instance allocation found no solution: {result.message}")
    instances = np.round(result.x[n_x + n_total :]).astype(int)
    gap = float(getattr(result, "mip_gap", 0.0) or 0.0)
    stopped = result.status == 1  # scipy: an iteration or time limit was reached
    return Allocation(instances, int(gpus @ instances), float(-result.fun), "milp", gap, stopped)


def proportional_allocation(
    demand_share: np.ndarray, gpus_per_instance: np.ndarray, total_gpus: int
) -> Allocation:
    """GPUs split in proportion to ``demand_share`` ([m], e.g. each model's share of queries
    under capacity-free routing), rounded down to whole instances; leftover GPUs go one
    instance at a time to the model furthest below its share."""
    gpus = _positive_ints(gpus_per_instance, "gpus_per_instance")
    share = np.asarray(demand_share, dtype=float)
    share = share / share.sum()
    instances = np.floor(share * total_gpus / gpus).astype(int)
    while True:
        free = total_gpus - gpus @ instances
        fits = gpus <= free
        if not fits.any():
            break
        deficit = np.where(fits, share * total_gpus - gpus * instances, -np.inf)
        if not np.isfinite(deficit).any() or deficit.max() <= 0:
            break
        instances[int(np.argmax(deficit))] += 1
    return Allocation(instances, int(gpus @ instances), float("nan"), "proportional")


def _positive_ints(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or (array < 1).any():
        raise RouteInputError(f"{name} must be a 1-d array of positive integers, got {values!r}")
    return array
