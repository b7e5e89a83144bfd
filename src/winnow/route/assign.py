"""Batch assignment of queries to models as an integer program: the public API.

A batch of n queries goes to m models at once. With ``x[q, j] = 1`` when query q goes to model j::

    maximise    sum_qj quality[q, j] x[q, j]
    subject to  sum_j x[q, j] = 1                  every query goes to exactly one model
                sum_q x[q, j] <= capacity[j]       per-model capacity (instances x concurrency)
                sum_qj cost[q, j] x[q, j] <= budget
                x in {0, 1}

How ``"milp"`` solves (no step gives up exactness; the speed comes from keeping HiGHS' problems
small). :mod:`winnow.route.relaxation` holds steps 1-3 and the Lagrangian bound ``L`` with its
reduced costs ``r``, :mod:`winnow.route.cores` step 4.

1. Minimise a softmax-smoothed L over the m + 1 multipliers with L-BFGS-B (numpy, no LP).
2. Solve the LP relaxation on a core of pairs with small reduced cost, pricing the rest with its
   duals until none is missed (column generation): the LP optimum.
3. Round that point without breaking a row: the incumbent.
4. While ``bound - incumbent`` exceeds the tolerance, solve the core of pairs with
   ``r >= -delta`` exactly (by exhaustive search where few queries have a choice, else by the
   MILP), growing delta until the core provably holds every better solution.

Small batches need no other formulation: ``scipy.optimize.milp`` on every pair, at the same gap,
is slower from 5 x 11 up (50 x 11, capacity 13 each, budget 3x the cheapest: about 27 ms a call
against 7 ms here, one thread), because HiGHS' root node costs milliseconds even on tiny MILPs.

``"lp_round"`` stops after step 3 and reports its gap to the LP bound. Costs are divided by
``budget / n`` inside the solvers so that the budget row is well scaled, and every returned
assignment is checked in the caller's units with :func:`check_assignment`.

Optimality is up to ``mip_rel_gap`` (default 1e-4, HiGHS' own default):
``mip_gap = (bound - objective) / max(|objective|, 1)`` comes from a proven upper bound, and
``optimal`` says it is within ``mip_rel_gap``. The default was 1e-5 until batches whose quality
rises with cost (a correlated knapsack: hundreds of pairs tie at the LP's prices) ran for
minutes: their integer optimum lies about 1e-5 below the LP bound, so proving 1e-5 is a long
branch and bound (HiGHS on the whole program had not done it after 90 s), while 1e-4 holds at the
rounding. ``mip_rel_gap=0`` proves the optimum to HiGHS' absolute gap of 1e-6. Every call has a
time limit (``DEFAULT_TIME_LIMIT``, 60 s); one that stops there returns its best assignment with
its proven gap and ``time_limit_hit``.

The robust counterparts live in :mod:`winnow.route.robust`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from winnow.route.budget_rule import within_budget
from winnow.route.cores import HIGHS_ABS_GAP, Solution, close_gap
from winnow.route.exceptions import InfeasibleBatchError, RouteInputError
from winnow.route.relaxation import (
    Program,
    budgeted_worst_case,
    cost_scale,
    greedy_cheapest,
    lagrangian,
    least_cost_assignment,
    make_program,
    relax,
    relax_feasible,
    round_relaxation,
)

__all__ = ["DEFAULT_TIME_LIMIT", "METHODS", "Assignment", "assign_batch", "check_assignment"]

_DEFAULT_GAP = 1e-4
DEFAULT_TIME_LIMIT = 60.0  # seconds: no call runs unbounded unless asked (time_limit=None)


@dataclass(frozen=True)
class Assignment:
    """One batch's assignment and how good it is proven to be.

    Attributes
    ----------
    choice : [n] int
        Model index of each query; -1 for a deferred query.
    objective : float
        The maximised objective: expected correct answers, or their robust counterpart.
    quality : float
        Expected correct answers, ``sum_q quality[q, choice[q]]`` over assigned queries.
    cost : float
        Total cost of the assigned queries, in the caller's unit.
    deferred : [k] int
        Indices of deferred queries (empty unless ``defer_infeasible=True`` had to defer).
    method : str
        Solver that produced it.
    bound : float
        Proven upper bound on ``objective`` over all feasible assignments.
    mip_gap : float
        ``(bound - objective) / max(|objective|, 1)``, >= 0.
    optimal : bool
        ``mip_gap <= mip_rel_gap``, or the absolute gap within HiGHS' 1e-6 (``mip_rel_gap=0``).
    solve_seconds : float
        Wall time of the call.
    time_limit_hit : bool
        The call stopped at ``time_limit`` before proving ``mip_rel_gap``: the assignment is
        the best found, feasible, and ``mip_gap`` is what is proven of it.
    """

    choice: np.ndarray
    objective: float
    quality: float
    cost: float
    deferred: np.ndarray
    method: str
    bound: float
    mip_gap: float
    optimal: bool
    solve_seconds: float
    time_limit_hit: bool = False


# ---------------------------------------------------------------------------------------------
# Methods of assign_batch: (program, mip_rel_gap, deadline) -> solution with a proven bound.


def _solve_lp_round(program: Program, gap: float, deadline: float | None) -> Solution:
    relaxation = relax_feasible(program)
    return Solution(round_relaxation(program, relaxation), relaxation.bound)


def _solve_milp(program: Program, gap: float, deadline: float | None) -> Solution:
    relaxation = relax_feasible(program)
    _, reduced = lagrangian(program, relaxation.theta)
    choice = round_relaxation(program, relaxation)
    return close_gap(program, reduced, relaxation.bound, choice, gap, deadline, None)


_METHODS: dict[str, Callable[[Program, float, float | None], Solution]] = {
    "milp": _solve_milp,
    "lp_round": _solve_lp_round,
}
METHODS = tuple(_METHODS)


# ---------------------------------------------------------------------------------------------
# Public API.


def assign_batch(
    quality,
    cost,
    capacity=None,
    budget=None,
    *,
    method: str = "milp",
    defer_infeasible: bool = False,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    mip_rel_gap: float = _DEFAULT_GAP,
) -> Assignment:
    """Assign each query of a batch to one model, maximising expected correct answers.

    Parameters
    ----------
    quality : [n, m] float in [0, 1]
        Predicted probability that each model answers each query correctly.
    cost : [n, m] float >= 0
        Cost of each query on each model (USD).
    capacity : [m] int >= 0 or None
        Most queries each model takes in this batch (instances x concurrency); None: no limit.
    budget : float >= 0 or None
        Most total cost of the batch; None: no limit.
    method : {"milp", "lp_round"}
        ``"milp"``: optimal up to ``mip_rel_gap`` (module docstring). ``"lp_round"``: the LP
        relaxation rounded without breaking a constraint, with its gap to the LP bound.
    defer_infeasible : bool
        When no assignment of the whole batch fits, defer the fewest queries that make it fit
        instead of raising. Which ones is decided jointly with the rest's assignment: among all
        sets of that size, the one whose removal lets the others reach the highest quality.
    time_limit : float or None
        Wall-clock seconds for the call (default 60; None: no limit). The relaxation always
        completes; the core MILP stops at the limit and the best assignment found is returned
        with its proven gap and ``time_limit_hit``.
    mip_rel_gap : float >= 0
        Relative gap at which an assignment counts as optimal (default 1e-4, HiGHS' own);
        0 asks for the optimum.

    Returns
    -------
    Assignment

    Raises
    ------
    InfeasibleBatchError
        When capacities or budget cannot hold the batch and ``defer_infeasible`` is False; the
        message says which and by how much.
    RouteInputError
        On malformed input; the message names the argument.

    Examples
    --------
    >>> quality = [[0.9, 0.6], [0.8, 0.7]]
    >>> cost = [[1.0, 0.1], [1.0, 0.1]]
    >>> assign_batch(quality, cost, budget=1.1).choice.tolist()
    [0, 1]
    """
    started = time.perf_counter()
    if method not in _METHODS:
        allowed = ", ".join(repr(name) for name in METHODS)
        raise RouteInputError(f"unknown method {method!r}; allowed: {allowed}")
    quality = _as_matrix("quality", quality)
    _check_range("quality", quality, 0.0, 1.0)
    return _assign(
        quality, cost, capacity, budget, solver=_METHODS[method], method=method,
        defer=defer_infeasible, time_limit=time_limit, gap=mip_rel_gap, started=started,
    )  # fmt: skip


def check_assignment(choice, cost, capacity=None, budget=None) -> list[str]:
    """Constraints that ``choice`` breaks, one sentence each; empty when it is feasible.

    Parameters
    ----------
    choice : [n] int
        Model of each query, -1 for a deferred query (which counts against nothing).
    cost : [n, m] float
    capacity : [m] int or None
    budget : float or None
        The total is compared by :func:`~winnow.route.budget_rule.within_budget` (a relative
        slack of 1e-9, so a plan that costs exactly the budget passes in any summation order).

    Returns
    -------
    list of str
    """
    cost = np.asarray(cost, dtype=float)
    n, m = cost.shape
    choice = np.asarray(choice)
    if choice.shape != (n,) or not np.issubdtype(choice.dtype, np.integer):
        return [f"choice must be [{n}] integers; got shape {choice.shape}, dtype {choice.dtype}"]
    outside = np.flatnonzero((choice < -1) | (choice >= m))
    if outside.size:
        return [f"query {q} has model {choice[q]}, outside -1..{m - 1}" for q in outside]
    served = np.flatnonzero(choice >= 0)
    problems = []
    if capacity is not None:
        counts = np.bincount(choice[served], minlength=m)
        limit = np.asarray(capacity)
        problems += [
            f"model {j} has {counts[j]} queries, over its capacity {limit[j]:g}"
            for j in np.flatnonzero(counts > limit)
        ]
    total = float(cost[served, choice[served]].sum())
    if budget is not None and not within_budget(total, budget):
        problems.append(
            f"total cost {_usd(total)} is over the budget {_usd(budget)} by {_usd(total - budget)}"
        )
    return problems


def _assign(
    quality, cost, capacity, budget, *, solver, method, defer, time_limit, gap, started,
    deviation=None, gamma=0.0,
) -> Assignment:  # fmt: skip
    """Validate the rest, settle feasibility or deferral, solve, and check the result."""
    n, m = quality.shape
    cost = _as_matrix("cost", cost, quality.shape)
    _check_range("cost", cost, 0.0, np.inf)
    capacity, budget = _as_capacity(capacity, m), _as_budget(budget)
    _check_options(time_limit, gap)
    reason = _infeasibility(cost, capacity, budget) if n else None
    if reason is not None and not defer:
        raise InfeasibleBatchError(reason)
    choice, bound = np.zeros(0, int), 0.0
    if n:
        columns = [quality, cost, capacity, deviation]
        if reason is not None:  # a defer column: quality 0, cost 0, room for the fewest deferrals
            pad = np.zeros((n, 1))
            deferrals = _fewest_deferrals(cost, capacity, budget)
            columns = [np.hstack([quality, pad]), np.hstack([cost, pad])]
            columns += [np.append(capacity, deferrals)]
            columns += [None if deviation is None else np.hstack([deviation, pad])]
        scale = cost_scale(cost, budget)
        program = make_program(*columns[:3], budget, scale, columns[3], gamma)
        deadline = None if time_limit is None else started + time_limit
        solution = solver(program, gap, deadline)
        choice, bound = np.where(solution.choice >= m, -1, solution.choice), solution.bound
    problems = check_assignment(choice, cost, None if np.all(np.isinf(capacity)) else capacity,
                                None if np.isinf(budget) else budget)  # fmt: skip
    if problems:
        raise RuntimeError(f"winnow built an infeasible assignment: {'; '.join(problems)}")
    served = np.flatnonzero(choice >= 0)
    total = float(quality[served, choice[served]].sum())
    objective = total
    if deviation is not None:
        objective -= budgeted_worst_case(deviation[served, choice[served]], gamma)
    bound = max(float(bound), objective)
    mip_gap = (bound - objective) / max(abs(objective), 1.0)
    optimal = bool(bound - objective <= max(gap * max(abs(objective), 1.0), HIGHS_ABS_GAP))
    expired = time_limit is not None and time.perf_counter() >= started + time_limit
    return Assignment(
        choice=choice.astype(int),
        objective=objective,
        quality=total,
        cost=float(cost[served, choice[served]].sum()),
        deferred=np.flatnonzero(choice < 0),
        method=method,
        bound=bound,
        mip_gap=mip_gap,
        optimal=optimal,
        solve_seconds=time.perf_counter() - started,
        time_limit_hit=expired and not optimal,
    )


# ---------------------------------------------------------------------------------------------
# Feasibility and deferral.


def _usd(amount: float) -> str:
    return f"${amount:.4g}"


def _infeasibility(cost: np.ndarray, capacity: np.ndarray, budget: float) -> str | None:
    """Why no assignment of the whole batch fits, with the amounts; None when one does."""
    n = cost.shape[0]
    total = int(np.minimum(capacity, n).sum())
    if total < n:
        return (
            f"total capacity is {total} queries but the batch has {n}; add capacity for "
            f"{n - total} more or defer queries (defer_infeasible=True)"
        )
    if not np.isfinite(budget):
        return None
    usable = np.where(capacity > 0, cost, np.inf)
    choice = greedy_cheapest(usable, capacity)
    if np.any(choice < 0) or not within_budget(cost[np.arange(n), choice].sum(), budget):
        choice = least_cost_assignment(usable, capacity)
    cheapest = float(cost[np.arange(n), choice].sum())
    if within_budget(cheapest, budget):
        return None
    return (
        f"the cheapest assignment within capacities costs {_usd(cheapest)}, the budget is "
        f"{_usd(budget)}; raise the budget by {_usd(cheapest - budget)} or defer queries "
        "(defer_infeasible=True)"
    )


def _fewest_deferrals(cost: np.ndarray, capacity: np.ndarray, budget: float) -> int:
    """Smallest number of queries whose deferral makes the batch feasible.

    The least cost C(s) of serving s queries is a min-cost flow value: convex and piecewise
    linear with integral breakpoints. So the largest s with C(s) <= budget is the floor of the
    LP optimum of "serve as many as possible", checked once against C(s) exactly.
    """
    n, m = cost.shape
    with_defer = np.hstack([cost, np.zeros((n, 1))])
    served = np.hstack([np.ones((n, m)), np.zeros((n, 1))])
    scale = cost_scale(cost, budget)
    program = make_program(served, with_defer, np.append(capacity, np.inf), budget, scale)
    most = min(math.floor(relax(program, 0.0).value + 1e-6), n)
    if _infeasibility(with_defer, np.append(capacity, n - most), budget) is not None:
        most -= 1
    return n - most


# ---------------------------------------------------------------------------------------------
# Validation.


def _as_matrix(name: str, value, shape: tuple[int, int] | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RouteInputError(f"{name} must be a numeric [n, m] array; got {type(value)}") from exc
    if array.ndim != 2 or array.shape[1] == 0:
        raise RouteInputError(
            f"{name} must be a 2-D [n, m] array with m >= 1 models; got shape {array.shape}"
        )
    if shape is not None and array.shape != shape:
        raise RouteInputError(
            f"{name} has shape {array.shape} but quality has shape {shape}; both must be [n, m]"
        )
    _check_range(name, array, -np.inf, np.inf)
    return array


def _check_range(name: str, array: np.ndarray, low: float, high: float) -> None:
    bad = np.argwhere(~((array >= low) & (array <= high) & np.isfinite(array)))
    if bad.size:
        q, j = bad[0]
        allowed = {(0.0, 1.0): "in [0, 1]", (0.0, np.inf): ">= 0"}.get((low, high), "finite")
        raise RouteInputError(
            f"{name} must be {allowed}; found {array[q, j]} at [{q}, {j}] ({len(bad)} entries)"
        )


def _as_capacity(capacity, m: int) -> np.ndarray:
    if capacity is None:
        return np.full(m, np.inf)
    array = np.asarray(capacity, dtype=float)
    if array.shape != (m,):
        raise RouteInputError(
            f"capacity must have one entry per model, shape ({m},); got shape {array.shape}"
        )
    if not np.all(np.isfinite(array) & (array >= 0) & (array == np.floor(array))):
        raise RouteInputError(
            f"capacity must hold whole numbers >= 0 (None for no limit); got {array.tolist()}"
        )
    return array


def _as_budget(budget) -> float:
    value = np.inf if budget is None else float(budget)
    if budget is not None and not (np.isfinite(value) and value >= 0):
        raise RouteInputError(f"budget must be a number >= 0 (None for no limit); got {value}")
    return value


def _check_options(time_limit, mip_rel_gap) -> None:
    if time_limit is not None and not (np.isfinite(time_limit) and time_limit > 0):
        raise RouteInputError(f"time_limit must be None or seconds > 0; got {time_limit}")
    if not (np.isfinite(mip_rel_gap) and mip_rel_gap >= 0):
        raise RouteInputError(f"mip_rel_gap must be a number >= 0; got {mip_rel_gap}")
