"""The robust solvers against exhaustive search and the full dual formulation, and contracts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.route.test_assign import (
    EXACT,
    TOL,
    batches,
    brute_force,
    full_milp,
    random_batch,
    small_instances,
)
from winnow.route import cores
from winnow.route import robust as robust_module
from winnow.route.assign import assign_batch, check_assignment
from winnow.route.exceptions import RouteInputError
from winnow.route.robust import (
    assign_box_robust,
    assign_budgeted_robust,
    budgeted_worst_case,
    choose_robustness,
    robust_box,
)

# --- exhaustive agreement -------------------------------------------------------------------


@pytest.mark.parametrize("instance", list(small_instances(30, seed=1)), ids=range(30))
@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, 3.0, 6.0])
def test_budgeted_robust_matches_exhaustive_search(instance, gamma):
    quality, cost, capacity, budget, sigma = instance
    best = brute_force(quality, cost, capacity, budget, np.minimum(sigma, quality), gamma)
    if best is None:
        return
    result = assign_budgeted_robust(quality, sigma, cost, capacity, budget, gamma, **EXACT)
    assert check_assignment(result.choice, cost, capacity, budget) == []
    assert result.objective == pytest.approx(best[1], abs=TOL)
    assert result.bound >= best[1] - 1e-9


@pytest.mark.parametrize("instance", list(small_instances(15, seed=4)), ids=range(15))
@pytest.mark.parametrize("gamma", [1.0, 2.5])
def test_highs_on_every_robust_core_matches_exhaustive_search(instance, gamma, monkeypatch):
    """With the core search off every core goes to HiGHS, as most do on large batches."""
    monkeypatch.setattr(cores, "_SEARCH_QUERIES", -1)
    quality, cost, capacity, budget, sigma = instance
    best = brute_force(quality, cost, capacity, budget, np.minimum(sigma, quality), gamma)
    if best is None:
        return
    result = assign_budgeted_robust(quality, sigma, cost, capacity, budget, gamma, **EXACT)
    assert check_assignment(result.choice, cost, capacity, budget) == []
    assert result.objective == pytest.approx(best[1], abs=TOL)
    assert result.bound >= best[1] - 1e-9


@pytest.mark.parametrize("gamma", [2.5, 8.0])
def test_budgeted_robust_matches_full_dual_formulation(gamma):
    rng = np.random.default_rng(7)
    quality, cost, capacity, budget = random_batch(rng, 30, 4, 0.4, 0.4)
    sigma = rng.uniform(0.0, 0.3, size=quality.shape)
    deviation = np.minimum(sigma, quality)
    reference = full_milp(quality, cost, capacity, budget, deviation, gamma)
    result = assign_budgeted_robust(quality, sigma, cost, capacity, budget, gamma, **EXACT)
    assert result.objective == pytest.approx(reference, abs=TOL)


# --- properties -----------------------------------------------------------------------------


@settings(derandomize=True, max_examples=30, deadline=None)
@given(batches(), st.floats(0.0, 6.0))
def test_robust_assignments_are_feasible_and_below_nominal(batch, gamma):
    quality, cost, capacity, budget = batch
    sigma = 0.3 * quality[::-1, ::-1]
    nominal = assign_batch(quality, cost, capacity, budget, defer_infeasible=True, **EXACT)
    robust = assign_budgeted_robust(
        quality, sigma, cost, capacity, budget, gamma, defer_infeasible=True, **EXACT
    )
    assert check_assignment(robust.choice, cost, capacity, budget) == []
    assert robust.objective <= robust.quality + 1e-12
    assert robust.objective <= nominal.objective + TOL


# --- robustness -----------------------------------------------------------------------------


def test_zero_robustness_reproduces_the_nominal_solution():
    rng = np.random.default_rng(3)
    quality, cost, capacity, budget = random_batch(rng, 40, 4)
    sigma = rng.uniform(0, 0.2, size=quality.shape)
    nominal = assign_batch(quality, cost, capacity, budget, **EXACT)
    box = assign_box_robust(quality, sigma, 0.0, cost, capacity, budget, **EXACT)
    budgeted = assign_budgeted_robust(quality, sigma, cost, capacity, budget, 0.0, **EXACT)
    assert box.objective == pytest.approx(nominal.objective, abs=TOL)
    assert budgeted.objective == pytest.approx(nominal.objective, abs=TOL)
    for kappa, gamma in [(1.0, 3.0), (2.0, 40.0)]:
        robust = assign_budgeted_robust(quality, sigma, cost, capacity, budget, gamma, **EXACT)
        assert robust.objective <= nominal.objective + TOL
        assert assign_box_robust(quality, sigma, kappa, cost, capacity, budget).objective <= (
            nominal.objective + TOL
        )


def test_full_uncertainty_budget_is_the_unit_box():
    rng = np.random.default_rng(4)
    quality, cost, capacity, budget = random_batch(rng, 25, 3)
    sigma = rng.uniform(0, 0.5, size=quality.shape)
    box = assign_batch(robust_box(quality, sigma, 1.0), cost, capacity, budget, **EXACT)
    budgeted = assign_budgeted_robust(quality, sigma, cost, capacity, budget, 25, **EXACT)
    assert budgeted.objective == pytest.approx(box.objective, abs=TOL)


def test_robust_box_is_cut_at_zero():
    adjusted = robust_box([[0.5, 0.1]], [[0.1, 0.2]], 2.0)
    np.testing.assert_allclose(adjusted, [[0.3, 0.0]])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.7, 4.0, 9.0])
def test_budgeted_worst_case_equals_its_dual(gamma):
    deviation = np.array([0.3, 0.1, 0.25, 0.05])
    levels_ = np.concatenate([[0.0], deviation])
    dual = min(gamma * z + np.maximum(deviation - z, 0).sum() for z in levels_)
    assert budgeted_worst_case(deviation, gamma) == pytest.approx(dual)


def test_choose_robustness_takes_the_best_mean_and_the_smaller_on_ties():
    accuracy = {0.0: [0.70, 0.72], 1.0: [0.75, 0.73], 2.0: [0.74, 0.74], 3.0: [0.60, 0.62]}
    picked = choose_robustness([3.0, 2.0, 1.0, 0.0], lambda value: accuracy[value])
    assert picked.value == 1.0
    np.testing.assert_allclose(picked.candidates, [0, 1, 2, 3])
    np.testing.assert_allclose(picked.mean_accuracy, [0.71, 0.74, 0.74, 0.61])
    assert choose_robustness([2.0, 1.0], lambda value: 0.5).value == 1.0
    assert choose_robustness([0.0, 1.0], lambda v: accuracy[v], tolerance=0.05).value == 0.0


# --- contracts ------------------------------------------------------------------------------


def test_public_names():
    assert set(robust_module.__all__) <= set(dir(robust_module))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: robust_box([[0.5]], [[-0.1]], 1.0), r"sigma must be >= 0; found -0.1"),
        (lambda: robust_box([[0.5]], [[0.1]], -1.0), r"kappa must be a number >= 0"),
        (lambda: robust_box([[0.5]], [[0.1, 0.1]], 1.0), r"sigma has shape \(1, 2\)"),
        (
            lambda: assign_budgeted_robust([[0.5]], [[0.1]], [[1.0]], None, None, -2),
            r"gamma must be a number >= 0",
        ),
        (lambda: choose_robustness([], lambda v: 0.0), r"candidates must be a non-empty list"),
    ],
)
def test_robust_input_errors_name_the_argument(call, message):
    with pytest.raises(RouteInputError, match=message):
        call()
