"""The relaxation internals against dense references: worst cases, cheapest completions, the LP."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from winnow.route.relaxation import (
    budgeted_worst_case,
    budgeted_worst_cases,
    greedy_cheapest,
    lagrangian,
    least_cost_assignment,
    make_program,
    relax,
    round_relaxation,
)


@pytest.mark.parametrize("gamma", [0.0, 1.5, 3.0, 7.0])
def test_budgeted_worst_cases_are_the_rowwise_worst_case(gamma):
    deviation = np.random.default_rng(0).uniform(size=(6, 5))
    expected = [budgeted_worst_case(row, gamma) for row in deviation]
    np.testing.assert_allclose(budgeted_worst_cases(deviation, gamma), expected)


@pytest.mark.parametrize("seed", range(20))
def test_cheapest_assignments_match_enumeration(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    cost = np.where(rng.uniform(size=(n, k)) < 0.2, np.inf, rng.uniform(size=(n, k)))
    capacity = rng.integers(0, n + 1, size=k).astype(float)
    fits = [
        c
        for c in itertools.product(range(k), repeat=n)
        if np.all(np.isfinite(cost[range(n), c]))
        and np.all(np.bincount(c, minlength=k) <= capacity)
    ]
    exact = least_cost_assignment(cost, capacity)
    if not fits:
        assert exact is None
        return
    cheapest = min(cost[range(n), c].sum() for c in fits)
    assert cost[range(n), exact].sum() == pytest.approx(cheapest)
    greedy = greedy_cheapest(cost, capacity)
    if np.all(greedy >= 0):
        assert np.all(np.bincount(greedy, minlength=k) <= capacity)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [40, 600])  # the LP on every pair; dual, cores and pricing
def test_relaxation_reaches_the_lp_optimum_with_its_bound(seed, n):
    rng = np.random.default_rng(seed)
    k = 4
    score, cost = rng.uniform(size=(n, k)), rng.uniform(size=(n, k))
    capacity = np.full(k, 0.3 * n)
    budget = cost.min(axis=1).sum() + 0.3 * (cost.max(axis=1).sum() - cost.min(axis=1).sum())
    program = make_program(score, cost, capacity, budget, 1.0)
    relaxation = relax(program, 0.0)
    rows = np.repeat(np.arange(n), k)
    lp = linprog(
        -score.ravel(),
        A_ub=np.vstack([np.tile(np.eye(k), n), cost.ravel()]),
        b_ub=np.append(capacity, budget),
        A_eq=np.eye(n)[rows].T,
        b_eq=np.ones(n),
        bounds=(0, 1),
        method="highs",
    )
    assert relaxation.value == pytest.approx(-lp.fun, abs=1e-7)
    assert relaxation.bound == pytest.approx(-lp.fun, abs=1e-7)
    assert lagrangian(program, relaxation.theta)[0] == pytest.approx(relaxation.bound, abs=1e-9)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("tied", [True, False])  # tied: a model costs the same for every query
def test_rounding_leaves_no_improving_move_or_swap(seed, tied):
    rng = np.random.default_rng(seed)
    n, k = 30, 5
    score = rng.uniform(size=(n, k))
    cost = np.tile(rng.uniform(0.1, 1, size=k), (n, 1)) if tied else rng.uniform(size=(n, k))
    capacity = np.full(k, 8.0)
    rows = np.arange(n)
    cheapest = cost[rows, least_cost_assignment(cost, capacity)].sum()
    budget = cheapest + 0.3 * (cost.max(axis=1).sum() - cheapest)
    program = make_program(score, cost, capacity, budget, 1.0)
    choice = round_relaxation(program, relax(program))

    def fits(c):
        used = np.bincount(c, minlength=k)
        return np.all(used <= capacity) and cost[rows, c].sum() <= program.budget

    assert fits(choice)
    value = score[rows, choice].sum()
    for q, j in itertools.product(range(n), range(k)):
        moved = choice.copy()
        moved[q] = j
        assert not (fits(moved) and score[rows, moved].sum() > value + 1e-9)
    for q, r in itertools.combinations(range(n), 2):
        swapped = choice.copy()
        swapped[[q, r]] = choice[[r, q]]
        assert not (fits(swapped) and score[rows, swapped].sum() > value + 1e-9)
