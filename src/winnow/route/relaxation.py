"""The batch program in solver units, its Lagrangian bound, LP relaxation and rounding.

The internals of :mod:`winnow.route.assign` up to the incumbent (steps 1-3 of its docstring);
:mod:`winnow.route.cores` closes the gap from there. Only the m + 1 capacity and budget rows
couple the queries. Relaxing them with multipliers ``theta = (lam >= 0, mu >= 0)`` gives the
Lagrangian bound::

    L(theta) = sum_q max_j s[q, j] + lam . capacity + mu * budget,
    s[q, j]  = quality[q, j] - lam[j] - mu * cost[q, j],

which bounds the LP relaxation (with equality at the optimal theta) and so the integer optimum.
With reduced costs ``r[q, j] = s[q, j] - max_j' s[q, j'] <= 0`` every feasible x obeys
``value(x) <= L(theta) + sum_q r[q, x(q)]``, so a solution that uses a pair with ``r < -delta`` is
worth less than ``L(theta) - delta``. This reduced-cost argument holds for any theta >= 0.

Windows on r are in units of the spread of quality (its max - min, at most 1).

1. Minimise a softmax-smoothed L over the m + 1 multipliers with L-BFGS-B (numpy, no LP).
2. Solve the LP relaxation on the core of pairs with ``r >= -0.001`` (a query left one pair is
   fixed to it) by HiGHS dual simplex (``scipy.optimize.linprog``). Its duals price every pair;
   pairs it missed join the core until none is missed (column generation), so the result is the
   LP optimum. A basic optimum splits at most m + 1 queries between models.
3. Round that point without breaking a row (:func:`round_relaxation`): the incumbent.

Costs are divided by ``budget / n`` (:func:`cost_scale`) so that the budget row is well scaled.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from winnow.common.extras import require
from winnow.route.budget_rule import solver_budget
from winnow.route.exceptions import InfeasibleBatchError
from winnow.route.highs_output import run_highs

__all__ = [
    "Core",
    "Program",
    "Relaxation",
    "budgeted_worst_case",
    "budgeted_worst_cases",
    "build_core",
    "cost_scale",
    "greedy_cheapest",
    "lagrangian",
    "least_cost_assignment",
    "linear_term",
    "make_program",
    "objective_of",
    "relax",
    "relax_feasible",
    "round_relaxation",
    "score_spread",
    "with_budget",
]

_TAUS = (0.05, 0.01, 0.002)  # smoothing temperatures of the dual, times the score spread
# Reduced-cost window of the first core LP, times the score spread. Pricing adds whatever the
# window missed, so it sets speed only: where quality rises with cost, hundreds of pairs per 1,000
# queries lie within 0.02, and 10,000-query LPs took 1.4-3.7 s there against 0.09-0.4 s at 0.001
# (random batches: 180 -> 91 ms; the same optima).
_CORE_LP_DELTA = 0.001
_PRICING_ROUNDS = 6  # core LPs before the LP is solved on every pair
_LP_MARGIN = 1e-7  # budget margin (scaled units) that absorbs HiGHS' feasibility tolerance
_DIRECT_LP_PAIRS = 2_000  # up to this many pairs the LP on every pair beats steps 1-2
_EXCHANGE_STEPS = 256  # most moves or swaps of the local search
_SWAP_QUERIES = 500  # most queries whose pairwise swaps the local search tries ([n, n] arrays)


# ---------------------------------------------------------------------------------------------
# The program in solver units, and its Lagrangian bound.


@dataclass(frozen=True)
class Program:
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
class Relaxation:
    """The LP relaxation: multipliers with their bound, the LP value and its whole assignments."""

    theta: np.ndarray  # [k + 1] multipliers; the last prices the budget
    bound: float  # L(theta): bounds the LP and the integer optimum
    value: float  # LP value of the point below
    base: np.ndarray  # [n] model of each query the LP assigns whole, -1 where it splits one


def make_program(score, cost, capacity, budget, scale, deviation=None, gamma=0.0) -> Program:
    """The program in units of ``scale``; its budget row is :func:`solver_budget` of ``budget``,
    so a plan costing exactly the budget fits whatever the rounding of its sum."""
    cost, budget = cost / scale, solver_budget(budget) / scale
    allowed = np.isfinite(score) & (cost <= budget) & (capacity > 0)[None, :]
    cost = np.where(allowed, cost, 0.0)
    capacity_binds = capacity < allowed.sum(axis=0)
    budget_binds = np.isfinite(budget) and cost.max(axis=1).sum() > budget
    free_rows = np.append(capacity_binds, budget_binds)
    score = np.where(allowed, score, -np.inf)
    return Program(score, cost, capacity, budget, free_rows, deviation, gamma)


def cost_scale(cost: np.ndarray, budget: float) -> float:
    """Dollars per solver unit: the budget per query, else the mean positive cost, else 1.

    A subnormal budget (hypothesis found 5e-324) would give a zero scale, so such budgets fall
    through to the cost-based scale.
    """
    if np.isfinite(budget) and budget / cost.shape[0] >= np.finfo(float).tiny:
        return budget / cost.shape[0]
    positive = cost[cost > 0]
    return float(positive.mean()) if positive.size else 1.0


def with_budget(program: Program, budget: float) -> Program:
    return dataclasses.replace(program, budget=budget) if np.isfinite(program.budget) else program


def score_spread(score: np.ndarray) -> float:
    finite = score[np.isfinite(score)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    return spread if spread > 0 else 1.0


def linear_term(program: Program, theta: np.ndarray) -> float:
    limits = np.append(program.capacity, program.budget)
    return float((theta * np.where(program.free_rows, limits, 0.0)).sum())


def lagrangian(program: Program, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """``L(theta)`` and the reduced costs ``r`` [n, k] <= 0 (-inf on forbidden pairs)."""
    s = program.score - theta[:-1] - theta[-1] * program.cost
    best = s.max(axis=1)
    return float(best.sum()) + linear_term(program, theta), s - best[:, None]


def _smoothed_lagrangian(theta: np.ndarray, program: Program, tau: float):
    """L with each max replaced by ``tau logsumexp(. / tau)``, and its gradient."""
    s = (program.score - theta[:-1] - theta[-1] * program.cost) / tau
    top = s.max(axis=1, keepdims=True)
    weights = np.exp(s - top)
    total = weights.sum(axis=1, keepdims=True)
    share = weights / total
    usage = np.append(share.sum(axis=0), np.einsum("qj,qj->", share, program.cost))
    limits = np.append(program.capacity, program.budget)
    gradient = np.where(program.free_rows, limits - usage, 0.0)
    value = tau * float((np.log(total) + top).sum()) + linear_term(program, theta)
    return value, gradient


def _minimise_dual(program: Program, spread: float) -> np.ndarray:
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
class Core:
    fixed: np.ndarray  # [n] model of each query the mask leaves one pair, -1 for the others
    query: np.ndarray  # [v] query of each variable
    model: np.ndarray  # [v] model of each variable
    matrix: object  # scipy.sparse [f + r, v]: f assignment rows, then r capacity/budget rows
    upper: np.ndarray  # [f + r] right-hand sides; the assignment rows are equalities to 1
    n_free: int


def build_core(program: Program, mask: np.ndarray) -> Core | None:
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
    return Core(fixed, query, model, matrix, upper, free.size)


def _core_lp(program: Program, core: Core) -> tuple[np.ndarray, float, np.ndarray] | None:
    """``(theta, value, base)`` of the core's LP optimum (a vertex), or None if infeasible."""
    linprog = require("scipy.optimize", "route").linprog
    f = core.n_free
    fixed = np.flatnonzero(core.fixed >= 0)
    value = float(program.score[fixed, core.fixed[fixed]].sum())
    theta = np.zeros(program.free_rows.size)
    if core.query.size == 0:
        return theta, value, core.fixed
    coupled = core.upper.size > f
    result = run_highs(
        linprog,
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


def relax(program: Program, margin: float = _LP_MARGIN) -> Relaxation | None:
    """LP relaxation by smoothed dual, core LPs and pricing (module docstring, step 2).

    The LP runs with the budget lowered by ``margin`` (scaled units), so that rounding its point
    never hinges on HiGHS' feasibility tolerance; ``bound`` is L(theta) at the true budget.
    None when the LP is infeasible even with no margin.
    """
    spread = score_spread(program.score)
    small = program.score.size <= _DIRECT_LP_PAIRS
    theta = np.zeros(program.free_rows.size) if small else _minimise_dual(program, spread)
    safe = with_budget(program, program.budget - margin)
    bound, reduced = lagrangian(program, theta)
    delta = _CORE_LP_DELTA * spread
    mask = np.isfinite(program.score) if small else reduced >= -delta
    for attempt in range(_PRICING_ROUNDS + 1):
        if attempt == _PRICING_ROUNDS:
            mask = np.isfinite(program.score)
        core = build_core(safe, mask)
        lp = None if core is None else _core_lp(safe, core)
        if lp is None:  # the fixed queries overfill a row: widen the core
            delta *= 4
            mask |= reduced >= -delta
            continue
        theta_lp, value, base = lp
        priced, reduced_lp = lagrangian(safe, theta_lp)
        true_bound = lagrangian(program, theta_lp)[0]
        if true_bound < bound:
            bound, theta = true_bound, theta_lp
        if priced - value <= 1e-9 * max(1.0, abs(value)) or attempt == _PRICING_ROUNDS:
            return Relaxation(theta, max(bound, value), value, base)
        mask |= reduced_lp >= -delta
    return relax(program, 0.0) if margin > 0 else None


def relax_feasible(program: Program) -> Relaxation:
    relaxation = relax(program)
    if relaxation is None:
        raise InfeasibleBatchError("no assignment of the batch fits its capacities and budget")
    return relaxation


# ---------------------------------------------------------------------------------------------
# Rounding and cheapest completions.


def round_relaxation(program: Program, relaxation: Relaxation) -> np.ndarray:
    """An integral assignment [n] from the LP point, which never breaks a row.

    1. Queries the LP assigns whole keep their model.
    2. The split queries (at most k + 1) get the cheapest completion that fits the capacity and
       budget the whole queries leave: greedily by cost, else exactly (a transportation LP,
       whose vertices are integral). One exists: the LP's split part is a fractional
       completion, so the integral least-cost completion costs no more.
    3. Split queries, largest possible gain first, move to the best-quality model that still
       fits (cheaper first among equals).
    4. Local search (:func:`_exchange`): the best improving move of one query to another model,
       or swap of two queries' models, until none improves. When every query costs the same on
       a model (the proxy's worst-case reservations) steps 2-3 lose most through the split
       queries' counts landing on the wrong queries, which swaps repair at no cost or capacity.

    Should floating-point tolerance leave no completion in step 2, steps 2 and 3 run on the whole
    batch, which the caller (:mod:`winnow.route.assign`) has checked can be completed.
    """
    choice = relaxation.base
    pool = np.flatnonzero(choice < 0)
    completed = _complete(program, choice, pool)
    if completed is None:
        pool = np.arange(choice.size)
        completed = _complete(program, np.full(choice.size, -1), pool)
    if completed is None:
        raise InfeasibleBatchError("no assignment of the batch fits its capacities and budget")
    return _exchange(program, _upgrade(program, completed, pool))


def _complete(program: Program, choice: np.ndarray, pool: np.ndarray) -> np.ndarray | None:
    """``choice`` with the ``pool`` queries on their cheapest fitting models, or None."""
    k = program.score.shape[1]
    whole = np.flatnonzero(choice >= 0)
    capacity_left = program.capacity - np.bincount(choice[whole], minlength=k)
    budget_left = program.budget - program.cost[whole, choice[whole]].sum()
    if np.any(capacity_left < 0) or budget_left < 0:
        return None
    cost = np.where(np.isfinite(program.score[pool]), program.cost[pool], np.inf)
    picks = greedy_cheapest(cost, capacity_left)
    if np.any(picks < 0) or cost[np.arange(pool.size), picks].sum() > budget_left:
        picks = least_cost_assignment(cost, capacity_left)
    if picks is None or cost[np.arange(pool.size), picks].sum() > budget_left:
        return None
    completed = choice.copy()
    completed[pool] = picks
    return completed


def _upgrade(program: Program, choice: np.ndarray, pool: np.ndarray) -> np.ndarray:
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


def _exchange(program: Program, choice: np.ndarray) -> np.ndarray:
    """``choice`` improved by single moves and pairwise swaps that keep every row, best first.

    Each accepted step raises the nominal score; the loop stops when no step gains more than a
    billionth of the score's size, or after ``_EXCHANGE_STEPS`` steps (a few usually suffice).
    Swaps are tried up to ``_SWAP_QUERIES`` queries (their gains are an [n, n] array).
    """
    n = choice.size
    rows = np.arange(n)
    choice = choice.copy()
    for _ in range(_EXCHANGE_STEPS):
        held, spent = program.score[rows, choice], program.cost[rows, choice]
        capacity_left = program.capacity - np.bincount(choice, minlength=program.score.shape[1])
        budget_left = program.budget - spent.sum()
        with np.errstate(invalid="ignore"):  # -inf scores of forbidden pairs
            move = program.score - held[:, None]
            fits = (capacity_left >= 1) & (program.cost - spent[:, None] <= budget_left)
        move = np.where(fits, move, -np.inf)
        best_move = np.unravel_index(np.argmax(move), move.shape)
        gain, step = move[best_move], ("move", *best_move)
        if n <= _SWAP_QUERIES:
            theirs, their_cost = program.score[:, choice], program.cost[:, choice]  # [q, choice[r]]
            with np.errstate(invalid="ignore"):
                swap = theirs + theirs.T - held[:, None] - held[None, :]
                extra = their_cost + their_cost.T - spent[:, None] - spent[None, :]
            swap = np.where(extra <= budget_left, swap, -np.inf)
            best_swap = np.unravel_index(np.argmax(swap), swap.shape)
            if swap[best_swap] > gain:
                gain, step = swap[best_swap], ("swap", *best_swap)
        if not gain > 1e-9 * max(1.0, float(np.abs(held).sum())):
            break
        kind, q, target = step
        if kind == "move":
            choice[q] = target
        else:
            choice[[q, target]] = choice[[target, q]]
    return choice


def greedy_cheapest(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
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


def least_cost_assignment(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray | None:
    """The least-cost capacity-feasible assignment (inf = forbidden pair), or None.

    A transportation problem: its LP's vertices are integral, so the relaxation is exact.
    """
    finite = cost[np.isfinite(cost)]
    scale = float(finite.mean()) if finite.size and finite.mean() > 0 else 1.0
    program = make_program(-cost / scale, cost / scale, capacity, np.inf, 1.0)
    if np.any(np.all(~np.isfinite(program.score), axis=1)):
        return None
    relaxation = relax(program, 0.0)
    if relaxation is None or np.any(relaxation.base < 0):
        return None
    return relaxation.base


# ---------------------------------------------------------------------------------------------
# The objective, nominal or less its budgeted worst case.


def objective_of(program: Program, choice: np.ndarray) -> float:
    """Score of ``choice``, less its budgeted worst case when the program is robust."""
    rows = np.arange(choice.size)
    value = float(program.score[rows, choice].sum())
    if program.deviation is None:
        return value
    return value - budgeted_worst_case(program.deviation[rows, choice], program.gamma)


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
    return float(budgeted_worst_cases(np.asarray(deviation, dtype=float), gamma))


def budgeted_worst_cases(deviation: np.ndarray, gamma: float) -> np.ndarray:
    """:func:`budgeted_worst_case` of each row of ``deviation [..., n]``: shape ``[...]``."""
    ordered = -np.sort(-deviation, axis=-1)
    n, whole = ordered.shape[-1], math.floor(gamma)
    partial = (gamma - whole) * ordered[..., whole] if whole < n else 0.0
    return ordered[..., : min(whole, n)].sum(axis=-1) + partial
