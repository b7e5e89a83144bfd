import numpy as np
import pytest

from winnow.route.baselines import (
    best_single_model,
    calibrate_lambda,
    calibrate_threshold,
    cheapest_model,
    clip_to_budget,
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
