import numpy as np
import pytest

from winnow.route.baselines import (
    best_single_model,
    calibrate_lambda,
    calibrate_threshold,
    cheapest_model,
    clip_to_budget,
    constrained_choice,
    paced_lambda,
    per_query_choice,
    threshold_choice,
)


@pytest.fixture
def instance():
    rng = np.random.default_rng(0)
    quality = rng.uniform(size=(200, 4))
    cost = np.tile([0.1, 0.5, 1.0, 2.0], (200, 1)) * rng.uniform(0.8, 1.2, size=(200, 4))
    return quality, cost


def mean_cost(choice, cost):
    return cost[np.arange(len(choice)), choice].mean()


def test_per_query_choice_is_argmax_of_penalised_quality():
    quality = np.array([[0.9, 0.5], [0.6, 0.55]])
    cost = np.array([[1.0, 0.1], [1.0, 0.1]])
    assert per_query_choice(quality, cost, 0.0).tolist() == [0, 0]
    assert per_query_choice(quality, cost, 0.3).tolist() == [0, 1]  # 0.9-0.3 > 0.5-0.03


@pytest.mark.parametrize("budget", [0.2, 0.4, 0.7])
def test_calibrated_lambda_meets_budget_and_is_tight(instance, budget):
    quality, cost = instance
    lam = calibrate_lambda(quality, cost, budget)
    assert mean_cost(per_query_choice(quality, cost, lam), cost) <= budget
    assert mean_cost(per_query_choice(quality, cost, lam * 0.98), cost) > budget


def test_lambda_zero_when_budget_is_loose(instance):
    quality, cost = instance
    assert calibrate_lambda(quality, cost, 10.0) == 0.0


def test_threshold_router_meets_budget(instance):
    quality, cost = instance
    threshold = calibrate_threshold(quality, cost, strong=3, weak=0, budget_per_query=1.0)
    choice = threshold_choice(quality, 3, 0, threshold)
    assert set(choice.tolist()) <= {0, 3}
    assert mean_cost(choice, cost) <= 1.0


def test_single_model_baselines(instance):
    quality, cost = instance
    assert cheapest_model(cost) == 0
    best = best_single_model(quality, cost, budget_per_query=0.6)
    assert cost[:, best].mean() <= 0.6
    assert best_single_model(quality, cost, budget_per_query=0.0) == 0


def test_clip_to_budget_serves_in_order_until_money_runs_out():
    cost = np.array([[1.0], [2.0], [1.0], [0.5]])
    clipped = clip_to_budget(np.zeros(4, dtype=int), cost, budget=3.0)
    assert clipped.tolist() == [0, 0, -1, -1]


def test_constrained_router_falls_back_to_the_best_model_that_fits_in_arrival_order():
    # Preference (lam = 0): model 0 (best), then 1, then 2 (cheapest). Capacity 1 on model 0.
    quality = np.array([[0.9, 0.6, 0.3]] * 4)
    cost = np.array([[3.0, 1.0, 0.5]] * 4)
    choice = constrained_choice(quality, cost, np.array([1, 4, 4]), budget=5.0, lam=0.0)
    # q0: model 0 (2 left); q1: model 0 full -> 1 (1 left); q2: 1 (0 left); q3: nothing fits
    assert choice.tolist() == [0, 1, 1, -1]
    # With lam = 0.2 model 1 scores 0.6 - 0.2 = 0.4, above 0.9 - 0.6 = 0.3 and 0.3 - 0.1 = 0.2
    priced = constrained_choice(quality, cost, np.array([1, 4, 4]), budget=5.0, lam=0.2)
    assert priced.tolist() == [1, 1, 1, 1]
    # Exact-tie budget: four queries at 1.25 each spend exactly 5.0 (in any float order)
    tie = constrained_choice(quality, np.full((4, 3), 1.25), np.array([4, 4, 4]), 5.0, 0.0)
    assert tie.tolist() == [0, 0, 0, 0]


def test_paced_lambda_rises_over_budget_falls_under_and_keeps_its_floor():
    assert paced_lambda(2.0, spent=11.0, budgeted=10.0, step=1.0, floor=0.1) == pytest.approx(
        2.0 * np.exp(0.1)
    )
    assert paced_lambda(2.0, spent=5.0, budgeted=10.0, step=2.0, floor=0.1) == pytest.approx(
        2.0 * np.exp(-1.0)
    )
    assert paced_lambda(2.0, spent=10.0, budgeted=10.0, step=4.0, floor=0.1) == 2.0
    assert paced_lambda(0.05, spent=0.0, budgeted=10.0, step=4.0, floor=0.1) == 0.1
    assert paced_lambda(0.0, spent=0.0, budgeted=0.0, step=1.0, floor=0.1) == 0.1
