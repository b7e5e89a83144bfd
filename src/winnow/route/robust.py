"""Robust batch assignment: box and budgeted (Bertsimas-Sim) uncertainty in the quality.

The robust counterparts of :func:`winnow.route.assign.assign_batch`, and the rule that picks
their robustness on validation batches. They read ``sigma [n, m] >= 0``, the uncertainty of each
quality estimate. A probability cannot fall below 0, so the box worst case is
``max(quality - kappa * sigma, 0)`` and the budgeted variant's deviation is
``min(sigma, quality)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.route.assign import (
    _DEFAULT_GAP,
    DEFAULT_TIME_LIMIT,
    Assignment,
    _as_matrix,
    _assign,
    _check_range,
    assign_batch,
)
from winnow.route.cores import Solution, close_gap
from winnow.route.exceptions import RouteInputError
from winnow.route.relaxation import (
    Program,
    budgeted_worst_case,
    linear_term,
    objective_of,
    relax_feasible,
    round_relaxation,
)

__all__ = [
    "RobustnessChoice",
    "assign_box_robust",
    "assign_budgeted_robust",
    "budgeted_worst_case",
    "choose_robustness",
    "robust_box",
]

_LEVEL_GRID = 17  # first grid of robust levels z over [0, max deviation]
_LEVEL_ROUNDS = 24  # bisections that sharpen the bracket of z and the robust bound


@dataclass(frozen=True)
class RobustnessChoice:
    """The picked robustness ``value``, the sorted ``candidates`` and their ``mean_accuracy``."""

    value: float
    candidates: np.ndarray
    mean_accuracy: np.ndarray


def assign_budgeted_robust(
    quality,
    sigma,
    cost,
    capacity,
    budget,
    gamma: float,
    *,
    defer_infeasible: bool = False,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
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

    on cores of pairs proven to hold the optimum (the comment above ``_solve_budgeted`` gives
    the argument), by ``scipy.optimize.milp`` or, for a small core, by exhaustive search on the
    robust objective itself (:mod:`winnow.route.cores`). ``gamma = 0`` is the nominal problem, and
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


def _quality_and_sigma(quality, sigma) -> tuple[np.ndarray, np.ndarray]:
    quality = _as_matrix("quality", quality)
    _check_range("quality", quality, 0.0, 1.0)
    sigma = _as_matrix("sigma", sigma, quality.shape)
    _check_range("sigma", sigma, 0.0, np.inf)
    return quality, sigma


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


def _solve_budgeted(program: Program, gap: float, deadline: float | None) -> Solution:
    choice, theta = _robust_incumbent(program)
    levels, top = _level_bracket(program, theta, objective_of(program, choice))
    s = program.score - theta[:-1] - theta[-1] * program.cost
    low, high = (s - np.maximum(program.deviation - z, 0.0) for z in levels)
    reduced = high - low.max(axis=1, keepdims=True)
    return close_gap(program, reduced, top, choice, gap, deadline, levels)


def _at_level(program: Program, level: float) -> Program:
    """The nominal program at level z: quality lowered by ``max(deviation - z, 0)``."""
    score = program.score - np.maximum(program.deviation - level, 0.0)
    return dataclasses.replace(program, score=score, deviation=None, gamma=0.0)


def _worst_case_level(deviation: np.ndarray, gamma: float) -> float:
    """The z minimising ``gamma z + sum max(deviation - z, 0)``: the floor(gamma)+1-th largest."""
    ordered = np.sort(deviation)[::-1]
    return float(ordered[math.floor(gamma)]) if math.floor(gamma) < ordered.size else 0.0


def _robust_incumbent(program: Program) -> tuple[np.ndarray, np.ndarray]:
    """Alternate rounding the LP at level z and moving z to that assignment's level.

    Returns the best assignment seen and the multipliers of the LP it came from.
    """
    best, best_value, theta, level, seen = None, -np.inf, None, np.inf, set()
    while level not in seen and len(seen) < 4:
        seen.add(level)
        nominal = _at_level(program, level)
        relaxation = relax_feasible(nominal)
        choice = round_relaxation(nominal, relaxation)
        value = objective_of(program, choice)
        if value > best_value:
            best, best_value, theta = choice, value, relaxation.theta
        level = _worst_case_level(program.deviation[np.arange(choice.size), choice], program.gamma)
    return best, theta


def _level_bracket(program: Program, theta: np.ndarray, incumbent: float):
    """``((z_lo, z_hi), top)``: where the levels of solutions worth ``incumbent`` lie, and top.

    On [a, b], Phi(z) <= L(theta; q_b) - gamma a because L grows with quality; beyond the
    largest deviation Phi only falls. A grid over [0, max deviation] is bisected where it
    matters: the first and last intervals whose bound reaches ``incumbent``, and the one with
    the largest bound, which gives ``top``.
    """
    s = program.score - theta[:-1] - theta[-1] * program.cost
    constant = linear_term(program, theta)

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
