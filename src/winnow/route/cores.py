"""Closing the gap: exact solves on cores of pairs until the bound is proven.

Step 4 of :mod:`winnow.route.assign`'s docstring. ``top`` bounds the objective and every
solution x obeys ``value(x) <= top + sum_q reduced[q, x(q)]`` (the reduced-cost argument of
:mod:`winnow.route.relaxation`; :mod:`winnow.route.robust` supplies its own ``top`` and
``reduced``). While ``bound - incumbent`` exceeds the tolerance, the core of pairs with
``reduced >= -delta`` is solved; the batch is then bounded by ``max(core bound, top - delta)``.
delta starts at 0.0015 times the score spread.

A core is solved by one of two exact methods. Where few queries have a choice, an exhaustive
search pruned by the same reduced-cost argument (:func:`_search_core`) takes well under a
millisecond, and delta doubles while the search keeps taking the cores. Otherwise the MILP
(``scipy.optimize.milp``) solves it: HiGHS spends 5-50 ms at its root node even on 20
binaries, so delta then jumps to ``top - incumbent``, where the core provably holds every
better solution and the bound is the core's own (on the first core, as before any search, the
MILP runs at the starting delta).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from winnow.common.extras import require
from winnow.route.highs_output import run_highs
from winnow.route.relaxation import (
    Core,
    Program,
    budgeted_worst_cases,
    build_core,
    objective_of,
    score_spread,
    with_budget,
)

__all__ = ["HIGHS_ABS_GAP", "Solution", "close_gap"]

HIGHS_ABS_GAP = 1e-6  # HiGHS' mip_abs_gap: the smallest absolute gap it proves
_CORE_DELTA = 0.0015  # reduced-cost window of the first core, times the score spread
# Exhaustive search on a core: each query with a choice costs a step of ~0.05 ms plus ~0.25 ms
# per 1,000 partial assignments, against HiGHS' 5-50 ms on the cores of 50 x 11 and 1,000 x 11
# batches (one thread). Past these limits HiGHS takes the core.
_SEARCH_QUERIES = 40  # most queries with a choice in a core
_SEARCH_STATES = 1 << 11  # most partial assignments kept after a step


@dataclass(frozen=True)
class Solution:
    """An assignment [n] in program columns and a proven upper bound on its objective."""

    choice: np.ndarray
    bound: float


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() >= deadline


def close_gap(program, reduced, top, choice, gap, deadline, levels) -> Solution:
    """Module docstring: exact solves on growing cores until the bound is proven.

    ``top`` bounds the objective and a solution using a pair with ``reduced < -delta`` is worth
    less than ``top - delta``; after solving the core of pairs with ``reduced >= -delta`` the
    batch is bounded by ``max(core bound, top - delta)``. ``levels`` is the robust bracket of z,
    or None for the nominal program.
    """
    value = objective_of(program, choice)
    bound = top
    tolerance = max(gap * max(abs(value), 1.0), HIGHS_ABS_GAP)
    delta = first = _CORE_DELTA * score_spread(program.score)
    slack = 1e-9 * max(1.0, abs(top))
    everything = np.isfinite(program.score)
    while bound - value > tolerance and not _expired(deadline):
        core = _core_mask(reduced, delta + slack, choice)
        searched = _search_core(program, core, reduced, top + slack, choice)
        if searched is None and first < delta < top - value:  # a doubled core outgrew the search
            delta = top - value
            core = _core_mask(reduced, delta + slack, choice)
        found = searched or _core_milp(program, core, choice, tolerance, deadline, levels)
        choice, core_bound = found
        value = objective_of(program, choice)
        whole = np.all(core[everything])
        outside = -np.inf if whole else top - delta  # what a solution off the core may reach
        bound = min(bound, max(core_bound, outside, value))
        if whole:
            break
        closing = top - value  # the window whose core holds every better solution
        cheap = searched is not None and closing > 2 * delta + tolerance
        delta = 2 * delta if cheap else max(2 * delta, closing)
    return Solution(choice, bound)


def _core_mask(reduced: np.ndarray, window: float, choice: np.ndarray) -> np.ndarray:
    """[n, k] bool: the pairs with ``reduced >= -window``, and the incumbent's own."""
    core = reduced >= -window
    core[np.arange(choice.size), choice] = True
    return core


def _searchable(core: np.ndarray) -> bool:
    return int(np.count_nonzero(core.sum(axis=1) > 1)) <= _SEARCH_QUERIES


def _search_core(program, mask, reduced, top, incumbent) -> tuple[np.ndarray, float] | None:
    """Best assignment on a small core by exhaustive search, and the core's optimum.

    Queries the core leaves one pair keep it. The others are assigned one at a time, every
    partial assignment one row of the arrays below, and a row is dropped once it breaks a
    capacity or the budget, or cannot beat the incumbent: each completion x of it has
    ``value(x) <= top + sum_q reduced[q, x(q)]`` (module docstring), a sum that the queries
    still to assign only lower (``reduced <= 0``). The rows that survive are compared on their
    exact objective; the incumbent lies in the core, so the better of the two is its optimum.

    None when more than ``_SEARCH_QUERIES`` queries have a choice, or more than
    ``_SEARCH_STATES`` rows survive a step or would with no value pruning at all: HiGHS then
    takes the core.
    """
    if not _searchable(mask):
        return None
    k = mask.shape[1]
    options = mask.sum(axis=1)
    fixed = np.flatnonzero(options == 1)
    fixed_model = mask[fixed].argmax(axis=1)
    free = np.flatnonzero(options > 1)
    lowest = np.where(mask[free], reduced[free], 0.0).min(axis=1)
    incumbent_value = objective_of(program, incumbent)
    floor = incumbent_value - top - float(reduced[fixed, fixed_model].sum())
    if lowest.sum() >= floor and np.log2(options[free]).sum() > math.log2(_SEARCH_STATES):
        return None  # no row can fall below the incumbent, so only the rows would prune
    free = free[np.argsort(lowest, kind="stable")]
    capacity_left = program.capacity - np.bincount(fixed_model, minlength=k)
    budget_left = program.budget - float(program.cost[fixed, fixed_model].sum())
    picks = np.zeros((1, 0), dtype=int)
    priced, score, spent, used = np.zeros(1), np.zeros(1), np.zeros(1), np.zeros((1, k))
    for q in free:
        models = np.flatnonzero(mask[q])
        parent = np.repeat(np.arange(picks.shape[0]), models.size)
        model = np.tile(models, picks.shape[0])
        priced = priced[parent] + reduced[q, model]
        spent = spent[parent] + program.cost[q, model]
        used = used[parent]
        used[np.arange(model.size), model] += 1
        keep = (priced >= floor) & (spent <= budget_left) & np.all(used <= capacity_left, axis=1)
        if np.count_nonzero(keep) > _SEARCH_STATES:
            return None
        picks = np.column_stack([picks[parent], model])[keep]
        score = (score[parent] + program.score[q, model])[keep]
        priced, spent, used = priced[keep], spent[keep], used[keep]
    values = score + float(program.score[fixed, fixed_model].sum())
    if program.deviation is not None and values.size:
        worst = min(math.floor(program.gamma) + 1, fixed.size)
        common = -np.sort(-program.deviation[fixed, fixed_model])[:worst]
        deviation = np.hstack([np.tile(common, (values.size, 1)), program.deviation[free, picks]])
        values = values - budgeted_worst_cases(deviation, program.gamma)
    if values.size == 0 or values.max() <= incumbent_value:
        return incumbent, incumbent_value
    choice = np.empty_like(incumbent)
    choice[fixed], choice[free] = fixed_model, picks[np.argmax(values)]
    return choice, objective_of(program, choice)  # in the caller's summation order


def _core_milp(program, mask, incumbent, tolerance, deadline, levels) -> tuple[np.ndarray, float]:
    """Best assignment on a core, and an upper bound on the core's optimum.

    HiGHS stops once ``|primal - dual| <= mip_rel_gap * |primal|``; ``mip_rel_gap`` =
    tolerance / (a bound on |primal|) keeps the absolute gap within ``tolerance``. A solution
    HiGHS accepts within its feasibility tolerance but over the budget in exact arithmetic is cut
    off by lowering the budget row by twice the excess, and the core is solved again.
    """
    optimize = require("scipy.optimize", "route")
    budget, bound = program.budget, None
    for _ in range(3):
        core = build_core(with_budget(program, budget), mask)
        model = _milp_model(program, core, levels)
        if model.top - objective_of(program, incumbent) <= tolerance:
            return incumbent, model.top
        options = {"mip_rel_gap": min(1.0, tolerance / max(model.magnitude, tolerance))}
        if deadline is not None:
            options["time_limit"] = max(deadline - time.perf_counter(), 1e-3)
        result = run_highs(
            optimize.milp,
            model.c,
            integrality=model.integrality,
            bounds=optimize.Bounds(model.lower, model.upper),
            constraints=optimize.LinearConstraint(model.matrix, model.row_lower, model.row_upper),
            options=options,
        )
        if bound is None:  # only the untightened program's dual bound holds for the batch
            dual = getattr(result, "mip_dual_bound", None)
            finite = dual is not None and np.isfinite(dual)
            bound = model.constant - dual if finite else model.top
        if result.x is None:
            return incumbent, bound
        choice = core.fixed.copy()
        picked = result.x[: core.query.size] > 0.5
        choice[core.query[picked]] = core.model[picked]
        excess = program.cost[np.arange(choice.size), choice].sum() - program.budget
        if not np.isfinite(program.budget) or excess <= 0:  # the row already holds the slack
            better = objective_of(program, choice) >= objective_of(program, incumbent)
            return (choice if better else incumbent), bound
        budget -= 2 * excess
    return incumbent, bound


@dataclass(frozen=True)
class _MilpModel:
    """Arrays of ``scipy.optimize.milp`` (a minimisation) on a core.

    ``constant`` is the fixed queries' score, ``top`` an upper bound on the objective, and
    ``magnitude`` an upper bound on ``|c . x|``.
    """

    c: np.ndarray
    integrality: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    matrix: object
    row_lower: np.ndarray
    row_upper: np.ndarray
    constant: float
    top: float
    magnitude: float


def _milp_model(program: Program, core: Core, levels) -> _MilpModel:
    """The core's MILP; with ``levels = (z_lo, z_hi)`` also the Bertsimas-Sim dual.

    Robust columns follow the pairs: one ``w_q >= 0`` per query that may deviate above z_lo,
    then the level z in [z_lo, z_hi], with rows ``sum_j deviation[q, j] x[q, j] - w_q - z <= 0``
    (``-w_q - z <= -deviation`` for a fixed query). A query whose deviations are all <= z_lo
    needs no w: ``max(deviation - z, 0)`` is 0 at every allowed z.
    """
    sparse = require("scipy.sparse", "route")
    v, f = core.query.size, core.n_free
    score = program.score[core.query, core.model]
    fixed = np.flatnonzero(core.fixed >= 0)
    constant = float(program.score[fixed, core.fixed[fixed]].sum())
    best = np.full(core.fixed.size, -np.inf)
    np.maximum.at(best, core.query, score)
    top = float(best[core.fixed < 0].sum())
    row_lower = np.concatenate([np.ones(f), np.full(core.upper.size - f, -np.inf)])
    if levels is None:
        return _MilpModel(
            -score, np.ones(v), np.zeros(v), np.ones(v), core.matrix, row_lower, core.upper,
            constant, constant + top, abs(top),
        )  # fmt: skip
    low, high = levels
    deviation = program.deviation[core.query, core.model]
    fixed_w = fixed[program.deviation[fixed, core.fixed[fixed]] > low]
    with_w = np.concatenate([np.unique(core.query[deviation > low]), fixed_w])
    w = with_w.size
    row_of = np.full(core.fixed.size, -1)
    row_of[with_w] = np.arange(w)
    on_row = np.flatnonzero(row_of[core.query] >= 0)
    rows = np.concatenate([row_of[core.query[on_row]], np.arange(w), np.arange(w)])
    cols = np.concatenate([on_row, v + np.arange(w), np.full(w, v + w)])
    values = np.concatenate([deviation[on_row], -np.ones(2 * w)])
    robust_rows = sparse.csr_array((values, (rows, cols)), shape=(w, v + w + 1))
    padded = sparse.hstack([core.matrix, sparse.csr_array((core.upper.size, w + 1))])
    robust_upper = np.zeros(w)
    robust_upper[w - fixed_w.size :] = -program.deviation[fixed_w, core.fixed[fixed_w]]
    return _MilpModel(
        c=np.concatenate([-score, np.ones(w), [program.gamma]]),
        integrality=np.concatenate([np.ones(v), np.zeros(w + 1)]),
        lower=np.concatenate([np.zeros(v + w), [low]]),
        upper=np.concatenate([np.ones(v), np.full(w, np.inf), [high]]),
        matrix=sparse.vstack([padded, robust_rows]).tocsr(),
        row_lower=np.concatenate([row_lower, np.full(w, -np.inf)]),
        row_upper=np.concatenate([core.upper, robust_upper]),
        constant=constant,
        top=constant + top,
        magnitude=abs(top) + program.gamma * high + w * float(program.deviation.max(initial=0)),
    )
