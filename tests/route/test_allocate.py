import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from winnow.route.allocate import allocate_instances, proportional_allocation
from winnow.route.exceptions import RouteInputError


def routing_value(quality_batches, capacity):
    """Reference: best relaxed served quality for fixed capacities, one LP per batch."""
    total = 0.0
    for quality in quality_batches:
        n, m = quality.shape
        a_eq = np.kron(np.eye(n), np.ones(m))
        a_ub = np.kron(np.ones(n), np.eye(m))
        result = linprog(  # each query served at most once, capacity per model
            -quality.ravel(),
            A_ub=np.vstack([a_ub, a_eq]),
            b_ub=np.concatenate([capacity, np.ones(n)]),
            bounds=(0, 1),
            method="highs",
        )
        total += -result.fun
    return total


def test_matches_exhaustive_search_over_instance_counts():
    rng = np.random.default_rng(0)
    quality = [rng.uniform(size=(6, 3)) * np.array([0.4, 0.7, 0.9]) for _ in range(3)]
    gpus, slots, total = np.array([1, 2, 3]), np.array([2, 2, 3]), 7
    plan = allocate_instances(quality, gpus, slots, total)
    best = max(
        routing_value(quality, slots * np.array(counts))
        for counts in itertools.product(range(8), range(4), range(3))
        if gpus @ np.array(counts) <= total
    )
    assert plan.planned_quality == pytest.approx(best, abs=1e-6)
    assert plan.gpus_used <= total
    assert routing_value(quality, slots * plan.instances) == pytest.approx(best, abs=1e-6)
    assert not plan.time_limit_hit and 0 <= plan.mip_gap <= 1e-4  # finished, with its gap


def test_budget_row_is_respected():
    quality = [np.array([[0.9, 0.2], [0.9, 0.2]])]
    cost = [np.array([[1.0, 0.0], [1.0, 0.0]])]
    plan = allocate_instances(quality, np.array([1, 1]), np.array([2, 2]), 2, cost, budget=1.0)
    assert plan.planned_quality == pytest.approx(0.9 + 0.2)


def test_proportional_allocation_uses_gpus_by_share():
    plan = proportional_allocation(np.array([0.5, 0.25, 0.25]), np.array([1, 1, 2]), 8)
    assert plan.instances.tolist() == [4, 2, 1]
    assert plan.gpus_used == 8


def test_bad_input():
    with pytest.raises(RouteInputError, match="gpus_per_instance"):
        allocate_instances([np.ones((2, 2))], np.array([0, 1]), np.array([1, 1]), 4)
    with pytest.raises(RouteInputError, match="disagree"):
        allocate_instances([np.ones((2, 3))], np.array([1, 1]), np.array([1, 1]), 4)
