"""The one rule by which money is compared with a budget, in every solver and check.

Costs are floats, so a plan that costs exactly the budget can sum to a hair above it in another
order, or after the solvers divide costs by their scale. A total is therefore *within* a budget
when it is at most :func:`budget_limit` (the budget plus one billionth of it: far above the
rounding of any sum, ~1e-16 per term, and far below a cent on any real budget). The solvers work
to :func:`solver_budget`, inside the limit by half that slack, so the rounding of their own sums
can never carry a plan they accept past the check in the caller's units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BUDGET_RTOL", "budget_limit", "solver_budget", "within_budget"]

BUDGET_RTOL = 1e-9


def budget_limit(budget: float) -> float:
    """The largest total that counts as within ``budget`` (inf stays inf)."""
    return budget * (1 + BUDGET_RTOL)


def solver_budget(budget: float) -> float:
    """The budget row the solvers enforce: half the slack of :func:`budget_limit`."""
    return budget * (1 + BUDGET_RTOL / 2)


def within_budget(total, budget: float):
    """``total <= budget_limit(budget)``, elementwise for arrays."""
    return np.less_equal(total, budget_limit(budget))
