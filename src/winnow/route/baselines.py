"""Per-query routers, the baselines that batch-level routing is measured against.

Each router decides every query on its own, by ``argmax_m quality - lam * cost``; the routers
differ in how ``lam`` is set and in what limits they honour:

- calibrated to the budget's *average* on training traffic (:func:`calibrate_lambda`); nothing
  stops a batch of hard queries from overspending;
- matched to a realised spend (the same function, with that spend as the target);
- paced online (:func:`paced_lambda`): a dual price raised or lowered after each batch by the
  spend so far against the budget so far;
- constrained (:func:`constrained_choice`): arrival order under the batch's hard budget and
  per-model capacity, falling back to the best model that still fits.
"""

from __future__ import annotations

import numpy as np

from winnow.route.budget_rule import within_budget
from winnow.route.exceptions import RouteInputError

__all__ = [
    "best_single_model",
    "calibrate_lambda",
    "calibrate_threshold",
    "cheapest_model",
    "clip_to_budget",
    "constrained_choice",
    "paced_lambda",
    "per_query_choice",
    "threshold_choice",
]


def per_query_choice(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """RouteLLM/RouterBench-style routing: ``argmax_m quality - lam * cost`` per query.

    ``quality, cost: [n, m]``; returns ``[n]`` model indices. Ties go to the lower index.
    """
    return np.argmax(quality - lam * cost, axis=1)


def calibrate_lambda(
    quality: np.ndarray, cost: np.ndarray, budget_per_query: float, iterations: int = 60
) -> float:
    """Smallest ``lam >= 0`` whose per-query routing costs at most ``budget_per_query`` on average.

    The chosen cost never increases with ``lam``, so bisection on ``log(lam)`` finds it. Returns
    0 when the best-quality choice is already within budget.
    """

    def mean_cost(lam: float) -> float:
        choice = per_query_choice(quality, cost, lam)
        return float(cost[np.arange(len(choice)), choice].mean())

    if mean_cost(0.0) <= budget_per_query:
        return 0.0
    low, high = 1e-9, 1.0
    while mean_cost(high) > budget_per_query:
        high *= 10
        if high > 1e15:
            raise RouteInputError(
                f"no lam meets budget_per_query={budget_per_query:.6g}: even the cheapest "
                f"models cost {cost.min(axis=1).mean():.6g} per query on average"
            )
    for _ in range(iterations):
        middle = float(np.sqrt(low * high))
        low, high = (low, middle) if mean_cost(middle) <= budget_per_query else (middle, high)
    return high


def threshold_choice(quality: np.ndarray, strong: int, weak: int, threshold: float) -> np.ndarray:
    """Two-model routing: the strong model when it is predicted ``threshold`` better, else weak."""
    use_strong = quality[:, strong] - quality[:, weak] > threshold
    return np.where(use_strong, strong, weak)


def calibrate_threshold(
    quality: np.ndarray, cost: np.ndarray, strong: int, weak: int, budget_per_query: float
) -> float:
    """Lowest threshold (most strong-model traffic) whose mean cost fits ``budget_per_query``."""
    gains = np.sort(quality[:, strong] - quality[:, weak])
    candidates = np.concatenate([[gains[0] - 1.0], gains])
    rows = np.arange(len(quality))
    for threshold in candidates:
        choice = threshold_choice(quality, strong, weak, threshold)
        if cost[rows, choice].mean() <= budget_per_query:
            return float(threshold)
    return float(gains[-1])


def best_single_model(quality: np.ndarray, cost: np.ndarray, budget_per_query: float) -> int:
    """The model with the best mean quality among those whose mean cost fits the budget.

    Falls back to the cheapest model when none fits.
    """
    affordable = cost.mean(axis=0) <= budget_per_query
    if not affordable.any():
        return cheapest_model(cost)
    means = np.where(affordable, quality.mean(axis=0), -np.inf)
    return int(np.argmax(means))


def cheapest_model(cost: np.ndarray) -> int:
    """The model with the lowest mean cost per query."""
    return int(np.argmin(cost.mean(axis=0)))


def clip_to_budget(choice: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """What a per-query router can serve under a hard batch budget, in arrival order.

    Queries are served while the running spend stays within ``budget``; the rest get ``-1``
    (not answered). ``choice: [n]``, ``cost: [n, m]``.
    """
    spend = np.cumsum(cost[np.arange(len(choice)), choice])
    return np.where(within_budget(spend, budget), choice, -1)


def constrained_choice(
    quality: np.ndarray, cost: np.ndarray, capacity: np.ndarray, budget: float, lam: float
) -> np.ndarray:
    """A per-query router that honours the batch's limits, deciding queries in arrival order.

    Each query takes its preferred model (``quality - lam * cost``, highest first) among those
    with a free slot that the money left can pay for; only a query that no model fits is
    unanswered (``-1``). ``quality, cost: [n, m]``, ``capacity: [m]``; returns ``[n]``.
    """
    n = cost.shape[0]
    preference = np.argsort(-(quality - lam * cost), axis=1, kind="stable")
    slots = np.asarray(capacity, dtype=float).copy()
    left = float(budget)
    choice = np.full(n, -1)
    for q in range(n):
        for j in preference[q]:
            if slots[j] >= 1 and within_budget(cost[q, j], left):
                choice[q], slots[j], left = j, slots[j] - 1, left - cost[q, j]
                break
    return choice


def paced_lambda(lam: float, spent: float, budgeted: float, step: float, floor: float) -> float:
    """The next batch's price after spending ``spent`` of ``budgeted`` so far (both > 0 sums).

    Multiplicative dual pacing: ``lam * exp(step * (spent / budgeted - 1))``, so a stream
    running 10% over budget raises the price by ``e^(0.1 step)`` and one under budget lowers
    it; never below ``floor`` (a price of 0 could never rise again).
    """
    if budgeted <= 0:
        return max(lam, floor)
    return max(lam * float(np.exp(step * (spent / budgeted - 1.0))), floor)
