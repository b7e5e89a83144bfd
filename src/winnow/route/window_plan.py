"""One window of the routing proxy planned: each request's model order under the window's
capacity and money (the assignment of :mod:`winnow.route.assign`, nominal or robust).

Kept apart from :mod:`winnow.route.proxy` so that planning runs and is tested without fastapi or
httpx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from winnow.route.assign import DEFAULT_TIME_LIMIT, assign_batch
from winnow.route.exceptions import RouteInputError
from winnow.route.proxy_config import Robustness
from winnow.route.robust import assign_budgeted_robust, robust_box

__all__ = ["WindowPlan", "check_quality", "plan_window", "warm_up"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPlan:
    """One window's plan: each request's model order, and how its solve ended (a plan cut
    short by the window's time limit is still feasible; ``mip_gap`` is what is proven)."""

    orders: list[list[int]]
    time_limit_hit: bool
    mip_gap: float


def plan_window(
    quality: np.ndarray,
    cost: np.ndarray,
    capacity: np.ndarray,
    budget: float,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    sigma: np.ndarray | None = None,
    robust: Robustness | None = None,
    mip_rel_gap: float = 1e-2,
) -> WindowPlan:
    """Each request's model order for one window: its assigned model, then fallbacks.

    Parameters
    ----------
    quality : [n, m] float in [0, 1]
        Predicted quality of each model on each request.
    cost : [n, m] float
        Worst-case cost in USD.
    capacity : [m] int
        Free calls per model in this window.
    budget : float
        USD the window may still spend.
    time_limit : float, optional
        Seconds the solver may take; on expiry its best assignment so far is used.
    sigma : [n, m] float >= 0, optional
        The quality estimates' standard errors, read by a robust plan.
    robust : Robustness, optional
        ``box`` plans on ``max(quality - kappa * sigma, 0)``; ``budgeted`` protects against
        ``gamma`` requests taking their worst case (Bertsimas-Sim); none: the nominal plan.
    mip_rel_gap : float
        The plan's relative optimality gap (``assign_batch``'s); a window needs a good plan
        soon more than a proven optimum.

    Returns
    -------
    WindowPlan
        ``orders``: per request the assigned model first, then the others by quality (higher
        first, cheaper first on ties), an empty list for a request the assignment defers; and
        whether the solve stopped at ``time_limit``, with its proven gap.
    """
    options = {"defer_infeasible": True, "time_limit": time_limit, "mip_rel_gap": mip_rel_gap}
    kind = "none" if robust is None or sigma is None else robust.kind
    if kind == "budgeted":
        assignment = assign_budgeted_robust(
            quality, sigma, cost, capacity, budget, robust.gamma, **options
        )
    else:
        planned = robust_box(quality, sigma, robust.kappa) if kind == "box" else quality
        assignment = assign_batch(planned, cost, capacity, budget, **options)
    orders = []
    for i, choice in enumerate(np.asarray(assignment.choice)):
        if choice < 0:
            orders.append([])
            continue
        ranked = np.lexsort((cost[i], -quality[i]))
        orders.append([int(choice), *(int(j) for j in ranked if j != choice)])
    return WindowPlan(orders, assignment.time_limit_hit, assignment.mip_gap)


def check_quality(p_hat: np.ndarray, n: int, m: int) -> np.ndarray:
    """``p_hat`` as a float array, checked to be ``[n, m]`` in ``[0, 1]`` (the quality model's
    contract), else a :class:`RouteInputError` naming the fix."""
    p_hat = np.asarray(p_hat, dtype=float)
    if p_hat.shape != (n, m) or not np.all((p_hat >= 0) & (p_hat <= 1)):
        raise RouteInputError(
            f"the quality model must return p_hat of shape ({n}, {m}) in [0, 1] for {n} prompts "
            f"and {m} pool models, got shape {p_hat.shape}; fix: predict in pool order"
        )
    return p_hat


def warm_up(quality_model, models: int) -> None:
    """Plan a made-up window once before serving: the proxy's first real window took 86 ms to
    plan against 18 ms at the median (lazy imports and first calls), all of it added latency.
    A failure is logged; the first real window then answers 500 and logs it the same way."""
    try:
        p_hat, _ = quality_model.predict(["warm-up", "a second prompt"])
        quality = check_quality(p_hat, 2, models)
        plan_window(quality, np.ones((2, models)), np.ones(models, dtype=int), 2.0 * models)
    except Exception:
        logger.exception("warming up the quality model and the planner failed")
