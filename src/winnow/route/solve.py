"""``winnow route solve``: one batch file in, one assignment file out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from winnow.common.inputs import read_table
from winnow.common.interrupt import call_interruptibly
from winnow.common.runs import atomic_path
from winnow.route.assign import DEFAULT_TIME_LIMIT, Assignment, assign_batch
from winnow.route.datasets import COST_SUFFIX, RoutingData, table_to_routing_data
from winnow.route.exceptions import InfeasibleBatchError, RouteInputError

__all__ = ["parse_capacities", "read_batch", "solve_batch_file"]


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


_METADATA = frozenset({"sample_id", "prompt", "eval_name", "task"})


def read_batch(batch: Path, drop_invalid: bool = False) -> RoutingData:
    """The batch table, checked strictly: ``solve`` never drops or ignores data silently.

    One-line errors for a missing, empty, non-UTF-8 or unparseable file; a model column with
    numbers but no ``<model>|total_cost`` column; and rows with a missing or NaN quality or
    cost (named by line; with ``drop_invalid`` they are dropped and counted instead).
    """
    import pandas as pd

    batch = Path(batch)
    frame = read_table(batch, [], "batch")
    columns = [str(c) for c in frame.columns]
    costed = {c.removesuffix(COST_SUFFIX) for c in columns if c.endswith(COST_SUFFIX)}
    uncosted = [
        c
        for c in columns
        if c not in _METADATA | costed
        and not c.endswith(COST_SUFFIX)
        and pd.api.types.is_numeric_dtype(frame[c])
    ]
    if uncosted:
        raise RouteInputError(
            f"{batch}: quality columns {uncosted} have no '<model>{COST_SUFFIX}' column; add "
            "their costs or remove them"
        )
    models = [c for c in columns if c in costed]
    unpriced = sorted(costed - set(models))
    if not costed or unpriced:
        raise RouteInputError(
            f"{batch}: every model needs a quality column and a '<model>{COST_SUFFIX}' column; "
            + (f"no quality column for {unpriced}" if unpriced else "there are no cost columns")
        )
    values = frame[[*models, *(m + COST_SUFFIX for m in models)]]
    bad = np.flatnonzero(values.apply(pd.to_numeric, errors="coerce").isna().any(axis=1))
    if bad.size and not drop_invalid:
        lines = ", ".join(str(i + 2) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise RouteInputError(
            f"{batch}: {bad.size} rows have a missing or non-numeric quality or cost (lines "
            f"{lines}); fix them, or pass --drop-invalid to leave them out"
        )
    frame = frame.drop(index=frame.index[bad])
    frame[values.columns] = frame[values.columns].apply(pd.to_numeric)
    data = table_to_routing_data(frame, models=models, source=str(batch))
    return dataclasses.replace(data, n_dropped=int(bad.size))


def solve_batch_file(
    batch: Path,
    output: Path,
    budget: float | None,
    capacity: Sequence[str],
    defer: bool,
    time_limit: float = DEFAULT_TIME_LIMIT,
    drop_invalid: bool = False,
    gap: float = 1e-4,
) -> str:
    """Solve the batch in ``batch`` and write ``output`` (CSV: id, model, quality, cost).

    Returns a one-line summary, with the proven gap when the solver stopped at ``time_limit``.
    A deferred query has an empty model. Ctrl-C stops the solve at once and writes nothing.
    """
    import pandas as pd

    if not (np.isfinite(time_limit) and time_limit > 0):
        raise RouteInputError(f"--time-limit must be seconds > 0; got {time_limit}")
    if not (np.isfinite(gap) and 0 <= gap < 1):
        raise RouteInputError(f"--gap must be a relative gap in [0, 1); got {gap}")
    if budget is not None and not (np.isfinite(budget) and budget >= 0):
        raise RouteInputError(
            f"--budget must be USD >= 0 (leave it out for no limit); got {budget}"
        )
    data = read_batch(batch, drop_invalid)
    limits = parse_capacities(capacity, data.models)

    def solve() -> Assignment:
        return assign_batch(
            data.quality, data.cost, limits, budget, defer_infeasible=defer,
            time_limit=time_limit, mip_rel_gap=gap,
        )  # fmt: skip

    try:
        result = call_interruptibly(solve)
    except InfeasibleBatchError as exc:  # the library names its parameter; here it is a flag
        raise InfeasibleBatchError(str(exc).replace("defer_infeasible=True", "--defer")) from None
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
        f"{_status(result, time_limit)}; "
        + (f"dropped {data.n_dropped} invalid rows; " if data.n_dropped else "")
        + f"wrote {output}"
    )


def _status(result: Assignment, time_limit: float) -> str:
    if not result.time_limit_hit:
        return f"optimal (proven gap {result.mip_gap:.2g}) in {result.solve_seconds:.2f} s"
    return (
        f"stopped at the {time_limit:g} s time limit with proven gap {result.mip_gap:.2g} "
        f"(expected correct at most {result.bound:.3f}); raise --time-limit to close it"
    )
