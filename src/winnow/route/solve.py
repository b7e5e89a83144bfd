"""``winnow route solve``: one batch file in, one assignment file out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from winnow.common.runs import atomic_path
from winnow.route.assign import assign_batch
from winnow.route.datasets import load_routing_table
from winnow.route.exceptions import RouteInputError

__all__ = ["parse_capacities", "solve_batch_file"]


def parse_capacities(items: Sequence[str], models: Sequence[str]) -> np.ndarray | None:
    """``["gpt-4=10", ...]`` as a ``[m]`` capacity vector (unlisted models: unlimited)."""
    if not items:
        return None
    capacity = np.full(len(models), np.iinfo(np.int64).max // 4, dtype=np.int64)
    for item in items:
        name, sep, count = item.rpartition("=")
        if not sep or name not in models or not count.isdigit():
            raise RouteInputError(
                f"capacity {item!r} must be MODEL=COUNT with MODEL one of: {', '.join(models)}"
            )
        capacity[list(models).index(name)] = int(count)
    return capacity


def solve_batch_file(
    batch: Path, output: Path, budget: float | None, capacity: Sequence[str], defer: bool
) -> str:
    """Solve the batch in ``batch`` and write ``output`` (CSV: id, model, quality, cost).

    Returns a one-line summary. A deferred query has an empty model.
    """
    import pandas as pd

    data = load_routing_table(batch)
    if data.cost is None:
        raise RouteInputError(f"{batch} has no '<model>|total_cost' columns; costs are required")
    limits = parse_capacities(capacity, data.models)
    result = assign_batch(data.quality, data.cost, limits, budget, defer_infeasible=defer)
    served = result.choice >= 0
    rows = np.arange(data.n_queries)
    picked = np.where(served, result.choice, 0)
    frame = pd.DataFrame(
        {
            "sample_id": data.ids,
            "model": np.where(served, np.array(data.models, dtype=object)[picked], ""),
            "predicted_quality": np.where(served, data.quality[rows, picked], np.nan),
            "cost": np.where(served, data.cost[rows, picked], 0.0),
        }
    )
    with atomic_path(output) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")
    return (
        f"assigned {int(served.sum())} of {data.n_queries} queries, expected correct "
        f"{result.objective:.3f}, cost ${result.cost:.6f}, deferred {len(result.deferred)}; "
        f"wrote {output}"
    )
