"""Batch assignment of queries to models as an integer program, and its robust counterparts.

A batch of n queries goes to m models at once. With ``x[q, j] = 1`` when query q goes to model j::

    maximise    sum_qj quality[q, j] x[q, j]
    subject to  sum_j x[q, j] = 1                  every query goes to exactly one model
                sum_q x[q, j] <= capacity[j]       per-model capacity (instances x concurrency)
                sum_qj cost[q, j] x[q, j] <= budget
                x in {0, 1}

Only the m + 1 capacity and budget rows couple the queries. Relaxing them with multipliers
``theta = (lam >= 0, mu >= 0)`` gives the Lagrangian bound::

    L(theta) = sum_q max_j s[q, j] + lam . capacity + mu * budget,
    s[q, j]  = quality[q, j] - lam[j] - mu * cost[q, j],

which bounds the LP relaxation (with equality at the optimal theta) and so the integer optimum.
With reduced costs ``r[q, j] = s[q, j] - max_j' s[q, j'] <= 0`` every feasible x obeys
``value(x) <= L(theta) + sum_q r[q, x(q)]``, so a solution that uses a pair with ``r < -delta`` is
worth less than ``L(theta) - delta``. This reduced-cost argument holds for any theta >= 0.

How ``"milp"`` solves (no step gives up exactness; the speed comes from keeping HiGHS' problems
small). Windows on r are in units of the spread of quality (its max - min, at most 1).

1. Minimise a softmax-smoothed L over the m + 1 multipliers with L-BFGS-B (numpy, no LP).
2. Solve the LP relaxation on the core of pairs with ``r >= -0.02`` (a query left one pair is
   fixed to it) by HiGHS dual simplex (``scipy.optimize.linprog``). Its duals price every pair;
   pairs it missed join the core until none is missed (column generation), so the result is the
   LP optimum. A basic optimum splits at most m + 1 queries between models.
3. Round that point without breaking a row (:func:`_round`): the incumbent.
4. While ``bound - incumbent`` exceeds the tolerance, solve the MILP (``scipy.optimize.milp``)
   on the core of pairs with ``r >= -delta``; the batch is then bounded by
   ``max(core bound, L - delta)``. delta starts at 0.0015 and grows to ``L - incumbent``, where the
   core provably holds every better solution and the bound is the core's own.

``"lp_round"`` stops after step 3 and reports its gap to the LP bound. Costs are divided by
``budget / n`` inside the solvers so that the budget row is well scaled, and every returned
assignment is checked in the caller's units with :func:`check_assignment`.

Optimality is up to ``mip_rel_gap`` (default 1e-5, ten times tighter than HiGHS' default):
``mip_gap = (bound - objective) / max(|objective|, 1)`` comes from a proven upper bound, and
``optimal`` says it is within ``mip_rel_gap``. ``mip_rel_gap=0`` proves the optimum to HiGHS'
absolute gap of 1e-6; the last step is then a correlated knapsack that can take HiGHS seconds.

Robust variants read ``sigma [n, m] >= 0``, the uncertainty of each quality estimate. A
probability cannot fall below 0, so the box worst case is ``max(quality - kappa * sigma, 0)``
and the budgeted variant's deviation is ``min(sigma, quality)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.common.extras import require
from winnow.route.exceptions import InfeasibleBatchError, RouteInputError

__all__ = [
    "METHODS",
    "Assignment",
    "RobustnessChoice",
    "assign_batch",
    "assign_box_robust",
    "assign_budgeted_robust",
    "budgeted_worst_case",
    "check_assignment",
    "choose_robustness",
    "robust_box",
]

_DEFAULT_GAP = 1e-5
_HIGHS_ABS_GAP = 1e-6  # HiGHS' mip_abs_gap: the smallest absolute gap it proves
_TAUS = (0.05, 0.01, 0.002)  # smoothing temperatures of the dual, times the score spread
_CORE_LP_DELTA = 0.02  # reduced-cost window of the first core LP, times the score spread
_CORE_MILP_DELTA = 0.0015  # reduced-cost window of the first core MILP, times the score spread
_PRICING_ROUNDS = 6  # core LPs before the LP is solved on every pair
_LEVEL_GRID = 17  # first grid of robust levels z over [0, max deviation]
_LEVEL_ROUNDS = 24  # bisections that sharpen the bracket of z and the robust bound
_BUDGET_RTOL = 1e-12  # summation-order slack when a total cost is compared with the budget
_LP_MARGIN = 1e-7  # budget margin (scaled units) that absorbs HiGHS' feasibility tolerance


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
        ``mip_gap <= mip_rel_gap``.
    solve_seconds : float
        Wall time of the call.
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


@dataclass(frozen=True)
class RobustnessChoice:
    """The picked robustness ``value``, the sorted ``candidates`` and their ``mean_accuracy``."""

    value: float
    candidates: np.ndarray
    mean_accuracy: np.ndarray


# ---------------------------------------------------------------------------------------------
# The program in solver units, and its Lagrangian bound.


@dataclass(frozen=True)
class _Program:
    """Arrays over k columns (the m models, plus a defer column when deferring).

    ``score`` [n, k] is -inf on forbidden pairs; ``cost`` [n, k] and ``budget`` are in units of
    the cost scale; inf means no limit. ``free_rows`` [k + 1] marks the rows that can bind (the
    others keep a zero multiplier). ``deviation`` [n, k] and ``gamma`` are the budgeted
    uncertainty of the robust solver (None and 0 otherwise).
    """

    score: np.ndarray
    cost: np.ndarray
    capacity: np.ndarray
    budget: float
    free_rows: np.ndarray
    deviation: np.ndarray | None = None
    gamma: float = 0.0


@dataclass(frozen=True)
class _Relaxation:
    theta: np.ndarray  # [k + 1] multipliers; the last prices the budget
    bound: float  # L(theta): bounds the LP and the integer optimum
    value: float  # LP value of the point below
    base: np.ndarray  # [n] model of each query the LP assigns whole, -1 where it splits one


@dataclass(frozen=True)
class _Solution:
    choice: np.ndarray
    bound: float


def _make_program(score, cost, capacity, budget, scale, deviation=None, gamma=0.0) -> _Program:
    cost, budget = cost / scale, budget / scale
    allowed = np.isfinite(score) & (cost <= budget) & (capacity > 0)[None, :]
    cost = np.where(allowed, cost, 0.0)
    capacity_binds = capacity < allowed.sum(axis=0)
    budget_binds = np.isfinite(budget) and cost.max(axis=1).sum() > budget
    free_rows = np.append(capacity_binds, budget_binds)
    score = np.where(allowed, score, -np.inf)
    return _Program(score, cost, capacity, budget, free_rows, deviation, gamma)


def _cost_scale(cost: np.ndarray, budget: float) -> float:
    if np.isfinite(budget) and budget > 0:
        return budget / cost.shape[0]
    positive = cost[cost > 0]
    return float(positive.mean()) if positive.size else 1.0


def _with_budget(program: _Program, budget: float) -> _Program:
    return dataclasses.replace(program, budget=budget) if np.isfinite(program.budget) else program


def _score_spread(score: np.ndarray) -> float:
    finite = score[np.isfinite(score)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    return spread if spread > 0 else 1.0


def _linear_term(program: _Program, theta: np.ndarray) -> float:
    limits = np.append(program.capacity, program.budget)
    return float((theta * np.where(program.free_rows, limits, 0.0)).sum())


def _lagrangian(program: _Program, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """``L(theta)`` and the reduced costs ``r`` [n, k] <= 0 (-inf on forbidden pairs)."""
    s = program.score - theta[:-1] - theta[-1] * program.cost
    best = s.max(axis=1)
    return float(best.sum()) + _linear_term(program, theta), s - best[:, None]


def _smoothed_lagrangian(theta: np.ndarray, program: _Program, tau: float):
    """L with each max replaced by ``tau logsumexp(. / tau)``, and its gradient."""
    s = (program.score - theta[:-1] - theta[-1] * program.cost) / tau
    top = s.max(axis=1, keepdims=True)
    weights = np.exp(s - top)
    total = weights.sum(axis=1, keepdims=True)
    share = weights / total
    usage = np.append(share.sum(axis=0), np.einsum("qj,qj->", share, program.cost))
    limits = np.append(program.capacity, program.budget)
    gradient = np.where(program.free_rows, limits - usage, 0.0)
    value = tau * float((np.log(total) + top).sum()) + _linear_term(program, theta)
    return value, gradient


def _minimise_dual(program: _Program, spread: float) -> np.ndarray:
    """Near-optimal multipliers: smoothed L minimised for decreasing tau, each from the last."""
    minimize = require("scipy.optimize", "route").minimize
    bounds = [(0.0, None) if free else (0.0, 0.0) for free in program.free_rows]
    theta = np.zeros(program.free_rows.size)
    for tau in _TAUS:
        theta = minimize(
            _smoothed_lagrangian,
            theta,
            args=(program, tau * spread),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 200, "gtol": 1e-2, "ftol": 1e-14},
        ).x
    return theta


# ---------------------------------------------------------------------------------------------
# Cores: the program on the pairs a mask keeps, a query left one pair being fixed to it.


@dataclass(frozen=True)
class _Core:
    fixed: np.ndarray  # [n] model of each query the mask leaves one pair, -1 for the others
    query: np.ndarray  # [v] query of each variable
    model: np.ndarray  # [v] model of each variable
    matrix: object  # scipy.sparse [f + r, v]: f assignment rows, then r capacity/budget rows
    upper: np.ndarray  # [f + r] right-hand sides; the assignment rows are equalities to 1
    n_free: int


def _build_core(program: _Program, mask: np.ndarray) -> _Core | None:
    """The program restricted to ``mask``; None when the fixed queries alone break a row."""
    sparse = require("scipy.sparse", "route")
    k = mask.shape[1]
    single = mask.sum(axis=1) == 1
    fixed = np.where(single, mask.argmax(axis=1), -1)
    kept, free = np.flatnonzero(single), np.flatnonzero(~single)
    local, model = np.nonzero(mask[free])
    query = free[local]
    capacity_rows = np.flatnonzero(program.free_rows[:-1])
    used = np.bincount(fixed[kept], minlength=k)[capacity_rows]
    capacity_left = program.capacity[capacity_rows] - used
    budget_left = program.budget - program.cost[kept, fixed[kept]].sum()
    if np.any(capacity_left < 0) or (program.free_rows[-1] and budget_left < 0):
        return None
    row_of_model = np.full(k, -1)
    row_of_model[capacity_rows] = free.size + np.arange(capacity_rows.size)
    v = np.arange(query.size)
    on_capacity = row_of_model[model] >= 0
    rows, cols = [local, row_of_model[model[on_capacity]]], [v, v[on_capacity]]
    values = [np.ones(v.size), np.ones(int(on_capacity.sum()))]
    upper = [np.ones(free.size), capacity_left.astype(float)]
    if program.free_rows[-1]:
        rows.append(np.full(v.size, free.size + capacity_rows.size))
        cols.append(v)
        values.append(program.cost[query, model])
        upper.append([budget_left])
    upper = np.concatenate(upper)
    matrix = sparse.csr_array(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(upper.size, v.size),
    )
    return _Core(fixed, query, model, matrix, upper, free.size)


def _core_lp(program: _Program, core: _Core) -> tuple[np.ndarray, float, np.ndarray] | None:
    """``(theta, value, base)`` of the core's LP optimum (a vertex), or None if infeasible."""
    linprog = require("scipy.optimize", "route").linprog
    f = core.n_free
    fixed = np.flatnonzero(core.fixed >= 0)
    value = float(program.score[fixed, core.fixed[fixed]].sum())
    theta = np.zeros(program.free_rows.size)
    if core.query.size == 0:
        return theta, value, core.fixed
    coupled = core.upper.size > f
    result = linprog(
        -program.score[core.query, core.model],
        A_ub=core.matrix[f:] if coupled else None,
        b_ub=core.upper[f:] if coupled else None,
        A_eq=core.matrix[:f],
        b_eq=core.upper[:f],
        bounds=(0, 1),
        method="highs-ds",
    )
    if result.status != 0:
        return None
    if coupled:
        theta[np.flatnonzero(program.free_rows)] = np.maximum(-result.ineqlin.marginals, 0.0)
    whole = result.x > 1 - 1e-9
    base = core.fixed.copy()
    base[core.query[whole]] = core.model[whole]
    split = np.setdiff1d(core.query[result.x > 1e-9], core.query[whole])
    base[split] = -1
    return theta, value - result.fun, base


def _relax(program: _Program, margin: float = _LP_MARGIN) -> _Relaxation | None:
    """LP relaxation by smoothed dual, core LPs and pricing (module docstring, step 2).

    The LP runs with the budget lowered by ``margin`` (scaled units), so that rounding its point
    never hinges on HiGHS' feasibility tolerance; ``bound`` is L(theta) at the true budget.
    None when the LP is infeasible even with no margin.
    """
    spread = _score_spread(program.score)
    theta = _minimise_dual(program, spread)
    safe = _with_budget(program, program.budget - margin)
    bound, reduced = _lagrangian(program, theta)
    delta = _CORE_LP_DELTA * spread
    mask = reduced >= -delta
    for attempt in range(_PRICING_ROUNDS + 1):
        if attempt == _PRICING_ROUNDS:
            mask = np.isfinite(program.score)
        core = _build_core(safe, mask)
        lp = None if core is None else _core_lp(safe, core)
        if lp is None:  # the fixed queries overfill a row: widen the core
            delta *= 4
            mask |= reduced >= -delta
            continue
        theta_lp, value, base = lp
        priced, reduced_lp = _lagrangian(safe, theta_lp)
        true_bound = _lagrangian(program, theta_lp)[0]
        if true_bound < bound:
            bound, theta = true_bound, theta_lp
        if priced - value <= 1e-9 * max(1.0, abs(value)) or attempt == _PRICING_ROUNDS:
            return _Relaxation(theta, max(bound, value), value, base)
        mask |= reduced_lp >= -delta
    return _relax(program, 0.0) if margin > 0 else None


def _relax_feasible(program: _Program) -> _Relaxation:
    relaxation = _relax(program)
    if relaxation is None:
        raise InfeasibleBatchError("no assignment of the batch fits its capacities and budget")
    return relaxation


# ---------------------------------------------------------------------------------------------
# Rounding and cheapest completions.


def _round(program: _Program, relaxation: _Relaxation) -> np.ndarray:
    """An integral assignment [n] from the LP point, which never breaks a row.

    1. Queries the LP assigns whole keep their model.
    2. The split queries (at most k + 1) get the cheapest completion that fits the capacity and
       budget the whole queries leave: greedily by cost, else exactly (a transportation LP,
       whose vertices are integral). One exists: the LP's split part is a fractional
       completion, so the integral least-cost completion costs no more.
    3. Split queries, largest possible gain first, move to the best-quality model that still
       fits (cheaper first among equals).

    Should floating-point tolerance leave no completion in step 2, steps 2 and 3 run on the whole
    batch, which :func:`_infeasibility` has checked can be completed.
    """
    choice = relaxation.base
    pool = np.flatnonzero(choice < 0)
    completed = _complete(program, choice, pool)
    if completed is None:
        pool = np.arange(choice.size)
        completed = _complete(program, np.full(choice.size, -1), pool)
    if completed is None:
        raise InfeasibleBatchError("no assignment of the batch fits its capacities and budget")
    return _upgrade(program, completed, pool)


def _complete(program: _Program, choice: np.ndarray, pool: np.ndarray) -> np.ndarray | None:
    """``choice`` with the ``pool`` queries on their cheapest fitting models, or None."""
    k = program.score.shape[1]
    whole = np.flatnonzero(choice >= 0)
    capacity_left = program.capacity - np.bincount(choice[whole], minlength=k)
    budget_left = program.budget - program.cost[whole, choice[whole]].sum()
    if np.any(capacity_left < 0) or budget_left < 0:
        return None
    cost = np.where(np.isfinite(program.score[pool]), program.cost[pool], np.inf)
    picks = _greedy_cheapest(cost, capacity_left)
    if np.any(picks < 0) or cost[np.arange(pool.size), picks].sum() > budget_left:
        picks = _cheapest(cost, capacity_left)
    if picks is None or cost[np.arange(pool.size), picks].sum() > budget_left:
        return None
    completed = choice.copy()
    completed[pool] = picks
    return completed


def _upgrade(program: _Program, choice: np.ndarray, pool: np.ndarray) -> np.ndarray:
    choice = choice.copy()
    capacity_left = program.capacity - np.bincount(choice, minlength=program.score.shape[1])
    budget_left = program.budget - program.cost[np.arange(choice.size), choice].sum()
    gains = program.score[pool].max(axis=1) - program.score[pool, choice[pool]]
    for q in pool[np.argsort(-gains, kind="stable")]:
        current = choice[q]
        for j in np.lexsort((program.cost[q], -program.score[q])):
            if program.score[q, j] <= program.score[q, current]:
                break
            extra = program.cost[q, j] - program.cost[q, current]
            if capacity_left[j] >= 1 and extra <= budget_left:
                capacity_left[[j, current]] += (-1, 1)
                budget_left -= extra
                choice[q] = j
                break
    return choice


def _greedy_cheapest(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Capacity-respecting assignment by cost (inf = forbidden), -1 where none fits.

    Rank by rank (each query's cheapest model, then its second cheapest...), a model over its
    capacity admits the queries that would lose most by moving to their next model.
    """
    n, k = cost.shape
    order = np.argsort(cost, axis=1, kind="stable")
    ranked = np.take_along_axis(cost, order, axis=1)
    with np.errstate(invalid="ignore"):  # inf - inf between two forbidden pairs
        regret = np.diff(ranked, axis=1, append=np.inf)
    choice = np.full(n, -1)
    left = capacity.astype(float)
    for rank in range(k):
        pending = np.flatnonzero(choice < 0)
        pending = pending[np.isfinite(ranked[pending, rank])]
        if pending.size == 0:
            break
        want = order[pending, rank]
        turn = np.lexsort((-regret[pending, rank], want))
        pending, want = pending[turn], want[turn]
        position = np.arange(want.size) - np.searchsorted(want, want, side="left")
        admit = position < left[want]
        choice[pending[admit]] = want[admit]
        left -= np.bincount(want[admit], minlength=k)
    return choice


def _cheapest(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray | None:
    """The least-cost capacity-feasible assignment (inf = forbidden pair), or None.

    A transportation problem: its LP's vertices are integral, so the relaxation is exact.
    """
    finite = cost[np.isfinite(cost)]
    scale = float(finite.mean()) if finite.size and finite.mean() > 0 else 1.0
    program = _make_program(-cost / scale, cost / scale, capacity, np.inf, 1.0)
    if np.any(np.all(~np.isfinite(program.score), axis=1)):
        return None
    relaxation = _relax(program, 0.0)
    if relaxation is None or np.any(relaxation.base < 0):
        return None
    return relaxation.base


# ---------------------------------------------------------------------------------------------
# Methods of assign_batch: (program, mip_rel_gap, deadline) -> solution with a proven bound.


def _solve_lp_round(program: _Program, gap: float, deadline: float | None) -> _Solution:
    relaxation = _relax_feasible(program)
    return _Solution(_round(program, relaxation), relaxation.bound)


def _solve_milp(program: _Program, gap: float, deadline: float | None) -> _Solution:
    relaxation = _relax_feasible(program)
    _, reduced = _lagrangian(program, relaxation.theta)
    choice = _round(program, relaxation)
    return _close_gap(program, reduced, relaxation.bound, choice, gap, deadline, None)


_METHODS: dict[str, Callable[[_Program, float, float | None], _Solution]] = {
    "milp": _solve_milp,
    "lp_round": _solve_lp_round,
}
METHODS = tuple(_METHODS)


def _objective_of(program: _Program, choice: np.ndarray) -> float:
    """Score of ``choice``, less its budgeted worst case when the program is robust."""
    rows = np.arange(choice.size)
    value = float(program.score[rows, choice].sum())
    if program.deviation is None:
        return value
    return value - budgeted_worst_case(program.deviation[rows, choice], program.gamma)


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() >= deadline


def _close_gap(program, reduced, top, choice, gap, deadline, levels) -> _Solution:
    """Module docstring, step 4: MILPs on growing cores until the bound is proven.

    ``top`` bounds the objective and a solution using a pair with ``reduced < -delta`` is worth
    less than ``top - delta``; after the MILP on the pairs with ``reduced >= -delta`` the batch
    is bounded by ``max(core bound, top - delta)``. ``levels`` is the robust bracket of z, or
    None for the nominal program.
    """
    value = _objective_of(program, choice)
    bound = top
    tolerance = max(gap * max(abs(value), 1.0), _HIGHS_ABS_GAP)
    delta = _CORE_MILP_DELTA * _score_spread(program.score)
    slack = 1e-9 * max(1.0, abs(top))
    everything = np.isfinite(program.score)
    while bound - value > tolerance and not _expired(deadline):
        core = reduced >= -(delta + slack)
        core[np.arange(choice.size), choice] = True
        choice, core_bound = _core_milp(program, core, choice, tolerance, deadline, levels)
        value = _objective_of(program, choice)
        bound = min(bound, max(core_bound, top - delta, value))
        if np.all(core[everything]):
            break
        delta = max(2 * delta, top - value)
    return _Solution(choice, bound)


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
        core = _build_core(_with_budget(program, budget), mask)
        model = _milp_model(program, core, levels)
        if model.top - _objective_of(program, incumbent) <= tolerance:
            return incumbent, model.top
        options = {"mip_rel_gap": min(1.0, tolerance / max(model.magnitude, tolerance))}
        if deadline is not None:
            options["time_limit"] = max(deadline - time.perf_counter(), 1e-3)
        result = optimize.milp(
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
        if not np.isfinite(program.budget) or excess <= _BUDGET_RTOL * abs(program.budget):
            better = _objective_of(program, choice) >= _objective_of(program, incumbent)
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


def _milp_model(program: _Program, core: _Core, levels) -> _MilpModel:
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


# ---------------------------------------------------------------------------------------------
# Budgeted robustness (Bertsimas-Sim). An assignment x with chosen deviations d_q loses, in the
# worst case, min_z gamma z + sum_q max(d_q - z, 0), attained at x's level z (the
# floor(gamma)+1-th largest d_q). At a fixed level the problem is the nominal one with quality
# q_z = quality - max(deviation - z, 0). With s = quality - lam - mu cost and
# h(z) = s - max(deviation - z, 0), the robust value R obeys
#     R(x) <= Phi(z) + sum_q rho[q, x(q)](z),    Phi(z) = L(theta; q_z) - gamma z,
#     rho[q, j](z) = h[q, j](z) - max_j' h[q, j'](z) <= 0,
# at x's level z. So Phi bounds the objective, any x worth at least an incumbent V has its level
# in {z : Phi(z) >= V} (bracketed by [z_lo, z_hi]), and since h grows with z, rho[q, j] is at
# most h[q, j](z_hi) - max_j' h[q, j'](z_lo) there: the reduced cost of the core argument.


def _solve_budgeted(program: _Program, gap: float, deadline: float | None) -> _Solution:
    choice, theta = _robust_incumbent(program)
    levels, top = _level_bracket(program, theta, _objective_of(program, choice))
    s = program.score - theta[:-1] - theta[-1] * program.cost
    low, high = (s - np.maximum(program.deviation - z, 0.0) for z in levels)
    reduced = high - low.max(axis=1, keepdims=True)
    return _close_gap(program, reduced, top, choice, gap, deadline, levels)


def _at_level(program: _Program, level: float) -> _Program:
    """The nominal program at level z: quality lowered by ``max(deviation - z, 0)``."""
    score = program.score - np.maximum(program.deviation - level, 0.0)
    return dataclasses.replace(program, score=score, deviation=None, gamma=0.0)


def _worst_case_level(deviation: np.ndarray, gamma: float) -> float:
    """The z minimising ``gamma z + sum max(deviation - z, 0)``: the floor(gamma)+1-th largest."""
    ordered = np.sort(deviation)[::-1]
    return float(ordered[math.floor(gamma)]) if math.floor(gamma) < ordered.size else 0.0


def _robust_incumbent(program: _Program) -> tuple[np.ndarray, np.ndarray]:
    """Alternate rounding the LP at level z and moving z to that assignment's level.

    Returns the best assignment seen and the multipliers of the LP it came from.
    """
    best, best_value, theta, level, seen = None, -np.inf, None, np.inf, set()
    while level not in seen and len(seen) < 4:
        seen.add(level)
        nominal = _at_level(program, level)
        relaxation = _relax_feasible(nominal)
        choice = _round(nominal, relaxation)
        value = _objective_of(program, choice)
        if value > best_value:
            best, best_value, theta = choice, value, relaxation.theta
        level = _worst_case_level(program.deviation[np.arange(choice.size), choice], program.gamma)
    return best, theta


def _level_bracket(program: _Program, theta: np.ndarray, incumbent: float):
    """``((z_lo, z_hi), top)``: where the levels of solutions worth ``incumbent`` lie, and top.

    On [a, b], Phi(z) <= L(theta; q_b) - gamma a because L grows with quality; beyond the
    largest deviation Phi only falls. A grid over [0, max deviation] is bisected where it
    matters: the first and last intervals whose bound reaches ``incumbent``, and the one with
    the largest bound, which gives ``top``.
    """
    s = program.score - theta[:-1] - theta[-1] * program.cost
    constant = _linear_term(program, theta)

    def bound_at(z: float) -> float:
        return float((s - np.maximum(program.deviation - z, 0.0)).max(axis=1).sum()) + constant

    points = list(np.linspace(0.0, program.deviation.max(initial=0.0), _LEVEL_GRID))
    values = [bound_at(z) for z in points]
    threshold = incumbent - 1e-9 * max(1.0, abs(incumbent))
    for attempt in range(_LEVEL_ROUNDS + 1):
        bounds = np.array(values[1:]) - program.gamma * np.array(points[:-1])
        alive = np.flatnonzero(bounds >= threshold)
        ends = {alive[0], alive[-1], alive[np.argmax(bounds[alive])]}
        split = sorted((i for i in ends if points[i + 1] - points[i] > 1e-12), reverse=True)
        if not split or attempt == _LEVEL_ROUNDS:
            break
        for i in split:
            middle = 0.5 * (points[i] + points[i + 1])
            points.insert(i + 1, middle)
            values.insert(i + 1, bound_at(middle))
    top = max(float(bounds[alive].max()), incumbent)
    return (float(points[alive[0]]), float(points[alive[-1] + 1])), top


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
    choice = _greedy_cheapest(usable, capacity)
    if np.any(choice < 0) or cost[np.arange(n), choice].sum() > budget:
        choice = _cheapest(usable, capacity)
    cheapest = float(cost[np.arange(n), choice].sum())
    if cheapest <= budget * (1 + _BUDGET_RTOL):
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
    scale = _cost_scale(cost, budget)
    program = _make_program(served, with_defer, np.append(capacity, np.inf), budget, scale)
    most = min(math.floor(_relax(program, 0.0).value + 1e-6), n)
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


def _quality_and_sigma(quality, sigma) -> tuple[np.ndarray, np.ndarray]:
    quality = _as_matrix("quality", quality)
    _check_range("quality", quality, 0.0, 1.0)
    sigma = _as_matrix("sigma", sigma, quality.shape)
    _check_range("sigma", sigma, 0.0, np.inf)
    return quality, sigma


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
    time_limit: float | None = None,
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
        Wall-clock seconds for the call. The relaxation always completes; the core MILP stops
        at the limit and the best assignment found is returned with its proven gap.
    mip_rel_gap : float >= 0
        Relative gap at which an assignment counts as optimal; 0 asks for the optimum.

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


def assign_budgeted_robust(
    quality,
    sigma,
    cost,
    capacity,
    budget,
    gamma: float,
    *,
    defer_infeasible: bool = False,
    time_limit: float | None = None,
    mip_rel_gap: float = _DEFAULT_GAP,
) -> Assignment:
    """Assign a batch to maximise quality when at most ``gamma`` queries take their worst case.

    Bertsimas-Sim budgeted uncertainty: query q on model j may lose ``deviation[q, j] =
    min(sigma[q, j], quality[q, j])`` (a probability stays >= 0), and the adversary picks at
    most ``gamma`` queries; a fractional gamma lets one more lose that fraction of its deviation.
    ``sum quality x - max_S sum_{q in S} deviation x`` is maximised through its dual::

        maximise    sum quality x - gamma z - sum_q w_q
        subject to  z + w_q >= sum_j deviation[q, j] x[q, j],  z >= 0,  w >= 0,
                    and the constraints of assign_batch,

    by ``scipy.optimize.milp`` on a core of pairs proven to hold the optimum (the comment above
    ``_solve_budgeted`` gives the argument). ``gamma = 0`` is the nominal problem, and
    ``gamma >= n`` the box of :func:`robust_box` with ``kappa = 1``.

    Parameters
    ----------
    quality : [n, m] float in [0, 1]
    sigma : [n, m] float >= 0
        Uncertainty of each quality estimate.
    cost, capacity, budget
        As in :func:`assign_batch`.
    gamma : float >= 0
        How many queries may be at their worst case at once.
    defer_infeasible, time_limit, mip_rel_gap
        As in :func:`assign_batch`.

    Returns
    -------
    Assignment
        ``objective`` is the robust value, ``quality`` the nominal expected correct answers.
    """
    started = time.perf_counter()
    quality, sigma = _quality_and_sigma(quality, sigma)
    if not (np.isfinite(gamma) and gamma >= 0):
        raise RouteInputError(f"gamma must be a number >= 0; got {gamma}")
    return _assign(
        quality, cost, capacity, budget, solver=_solve_budgeted, method="budgeted_robust",
        defer=defer_infeasible, time_limit=time_limit, gap=mip_rel_gap, started=started,
        deviation=np.minimum(sigma, quality), gamma=float(gamma),
    )  # fmt: skip


def robust_box(quality, sigma, kappa: float) -> np.ndarray:
    """Worst-case quality under box uncertainty: ``max(quality - kappa * sigma, 0)``.

    Parameters
    ----------
    quality : [n, m] float in [0, 1]
    sigma : [n, m] float >= 0
        Uncertainty (e.g. standard error) of each quality estimate.
    kappa : float >= 0
        Half-width of the box in units of sigma.

    Returns
    -------
    [n, m] float in [0, 1]
        A valid ``quality`` for :func:`assign_batch`, which then maximises the box worst case.
        A probability cannot fall below 0, so the box is cut there.
    """
    quality, sigma = _quality_and_sigma(quality, sigma)
    if not (np.isfinite(kappa) and kappa >= 0):
        raise RouteInputError(f"kappa must be a number >= 0; got {kappa}")
    return np.maximum(quality - kappa * sigma, 0.0)


def assign_box_robust(quality, sigma, kappa, cost, capacity=None, budget=None, **options):
    """:func:`assign_batch` on ``robust_box(quality, sigma, kappa)``, options passed on."""
    return assign_batch(robust_box(quality, sigma, kappa), cost, capacity, budget, **options)


def budgeted_worst_case(deviation, gamma: float) -> float:
    """Largest total loss when at most ``gamma`` of the chosen queries take their worst case.

    Parameters
    ----------
    deviation : [n] float >= 0
        Worst-case loss of each query on its chosen model.
    gamma : float >= 0

    Returns
    -------
    float
        The ``floor(gamma)`` largest deviations plus ``gamma - floor(gamma)`` times the next;
        equal to ``min_{z >= 0} gamma z + sum_q max(deviation_q - z, 0)``.
    """
    ordered = np.sort(np.asarray(deviation, dtype=float))[::-1]
    whole = min(math.floor(gamma), ordered.size)
    partial = (gamma - math.floor(gamma)) * ordered[whole] if whole < ordered.size else 0.0
    return float(ordered[:whole].sum() + partial)


def check_assignment(choice, cost, capacity=None, budget=None) -> list[str]:
    """Constraints that ``choice`` breaks, one sentence each; empty when it is feasible.

    Parameters
    ----------
    choice : [n] int
        Model of each query, -1 for a deferred query (which counts against nothing).
    cost : [n, m] float
    capacity : [m] int or None
    budget : float or None
        Totals are compared with a relative slack of 1e-12, the rounding error of summing in
        another order.

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
    if budget is not None and total > budget * (1 + _BUDGET_RTOL):
        problems.append(
            f"total cost {_usd(total)} is over the budget {_usd(budget)} by {_usd(total - budget)}"
        )
    return problems


def choose_robustness(
    candidates: Sequence[float], evaluate: Callable[[float], object], tolerance: float = 0.0
) -> RobustnessChoice:
    """Pick kappa or gamma on validation batches: best mean realised accuracy, ties to smaller.

    The rule: ``evaluate(value)`` routes every validation batch with that robustness value and
    returns each batch's realised accuracy (the fraction of its queries answered correctly,
    judged against the true labels); a candidate scores the mean over batches. The choice is
    the smallest candidate whose score is within ``tolerance`` of the best: a smaller value
    hedges less, so it wins ties. Routing lives in ``evaluate``, so this function stays pure.

    Parameters
    ----------
    candidates : sequence of float
        The grid, e.g. ``[0, 0.5, 1, 2]`` for kappa or ``[0, 2, 5, 10, 20]`` for gamma.
    evaluate : callable float -> float or [b] float
        Realised accuracy of each validation batch for one candidate.
    tolerance : float >= 0
        Scores within this of the best count as ties.

    Returns
    -------
    RobustnessChoice
    """
    grid = np.sort(np.asarray(candidates, dtype=float))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise RouteInputError(f"candidates must be a non-empty list of numbers; got {candidates!r}")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise RouteInputError(f"tolerance must be a number >= 0; got {tolerance}")
    scores = np.array([float(np.mean(evaluate(float(value)))) for value in grid])
    chosen = int(np.flatnonzero(scores >= scores.max() - tolerance)[0])
    return RobustnessChoice(float(grid[chosen]), grid, scores)


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
        scale = _cost_scale(cost, budget)
        program = _make_program(*columns[:3], budget, scale, columns[3], gamma)
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
    return Assignment(
        choice=choice.astype(int),
        objective=objective,
        quality=total,
        cost=float(cost[served, choice[served]].sum()),
        deferred=np.flatnonzero(choice < 0),
        method=method,
        bound=bound,
        mip_gap=mip_gap,
        optimal=bool(mip_gap <= gap),
        solve_seconds=time.perf_counter() - started,
    )
