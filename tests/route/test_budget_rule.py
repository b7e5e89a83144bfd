"""One budget rule: a plan that costs exactly the budget fits, in every solver and check.

Float costs make exact ties fragile (0.1 + 0.2 + 0.4 sums to 0.7000000000000001), and the
solvers divide costs by a scale. Before the rule, a fuzz of such ties found false infeasibility
and worse plans marked optimal; here every solver must match exhaustive search on them.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.route.test_assign import EXACT, TOL, brute_force
from winnow.route.assign import assign_batch, check_assignment
from winnow.route.budget_rule import BUDGET_RTOL, budget_limit, solver_budget, within_budget
from winnow.route.evaluate import score_batch, score_stream
from winnow.route.robust import assign_box_robust, assign_budgeted_robust, robust_box


def test_rule_counts_any_summation_order_of_an_exact_plan_and_nothing_above_the_slack():
    assert 0.1 + 0.2 + 0.4 > 0.7 and within_budget(0.1 + 0.2 + 0.4, 0.7)
    assert not within_budget(0.7 * (1 + 2 * BUDGET_RTOL), 0.7)
    assert 0.7 < solver_budget(0.7) < budget_limit(0.7)
    assert within_budget(np.array([0.7, 0.71]), 0.7).tolist() == [True, False]
    assert budget_limit(np.inf) == np.inf


def test_the_issue_example_a_plan_costing_exactly_the_budget():
    quality = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    cost = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.4]])
    result = assign_batch(quality, cost, None, 0.7, **EXACT)
    assert result.choice.tolist() == [0, 1, 2] and result.optimal
    assert check_assignment(result.choice, cost, None, 0.7) == []


def tie_instance(data):
    """A batch whose budget is the cost of one of its assignments, summed in a random order."""
    n, m = data.draw(st.integers(2, 6)), data.draw(st.integers(2, 3))
    unit = data.draw(st.sampled_from([0.1, 0.01, 0.07, 1 / 3, 0.3, 1e-6]))
    ints = st.lists(st.integers(0, 7), min_size=n * m, max_size=n * m)
    cost = unit * np.array(data.draw(ints), dtype=float).reshape(n, m)
    grades = st.lists(st.integers(0, 100), min_size=n * m, max_size=n * m)
    quality = np.array(data.draw(grades), dtype=float).reshape(n, m) / 100
    plan = np.array(data.draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n)))
    capacity = None
    if data.draw(st.booleans()):  # the plan's own loads: capacity binds too
        capacity = np.bincount(plan, minlength=m)
    order = data.draw(st.permutations(range(n)))
    budget = float(sum(cost[q, plan[q]] for q in order))
    sigma = np.array(data.draw(grades), dtype=float).reshape(n, m) / 500
    return quality, cost, capacity, budget, sigma


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_exact_ties_match_exhaustive_search(data):
    quality, cost, capacity, budget, sigma = tie_instance(data)
    variant = data.draw(st.sampled_from(["nominal", "lp_round", "defer", "box", "budgeted"]))
    deviation, gamma = None, 0.0
    if variant == "box":
        result = assign_box_robust(quality, sigma, 1.0, cost, capacity, budget, **EXACT)
        quality = robust_box(quality, sigma, 1.0)
    elif variant == "budgeted":
        gamma = float(data.draw(st.integers(0, 2)))
        result = assign_budgeted_robust(quality, sigma, cost, capacity, budget, gamma, **EXACT)
        deviation = np.minimum(sigma, quality)
    else:
        method = "lp_round" if variant == "lp_round" else "milp"
        result = assign_batch(quality, cost, capacity, budget, method=method,
                              defer_infeasible=variant == "defer", **EXACT)  # fmt: skip
    _, best = brute_force(quality, cost, capacity, budget, deviation, gamma)
    assert len(result.deferred) == 0  # the plan fits, so nothing is deferred
    assert within_budget(result.cost, budget)
    assert result.bound >= best - TOL  # the proven bound is a bound
    if variant != "lp_round":
        assert result.objective == pytest.approx(best, abs=TOL) and result.mip_gap <= TOL


def test_stream_scores_count_an_exact_tie_as_within_budget():
    cost = np.array([[0.1], [0.2], [0.4]])
    outcome = score_batch(np.zeros(3, int), np.ones((3, 1)), cost, np.array([3]), 0.7)
    assert score_stream([outcome], unanswered=0).batches_over_budget == 0
    over = score_batch(np.zeros(3, int), np.ones((3, 1)), cost, np.array([3]), 0.69)
    assert score_stream([over], unanswered=0).batches_over_budget == 1
