"""Effect summaries against closed forms and scikit-learn: shares, PD, ALE, curve differences."""

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.inspection import partial_dependence

from winnow.explain.effects import (
    accumulated_local_effects,
    ale_local_effects,
    center,
    curve_difference,
    data_support,
    family_shares,
    ice_curves,
    permutation_p_value,
    quantile_bins,
    shared_grid,
    shuffle_columns,
)


def additive(X: np.ndarray) -> np.ndarray:
    """f(x) = x0² + 3 x1: every effect is known in closed form."""
    return X[:, 0] ** 2 + 3 * X[:, 1]


@pytest.fixture
def X():
    return np.random.default_rng(0).uniform(-1, 1, size=(400, 3))


def test_family_shares_known_values_and_sum_to_one():
    values = np.array([[1.0, -2.0, 0.5], [-3.0, 0.0, 0.5]])  # mean |.| = 2, 1, 0.5
    shares = family_shares(values, {"a": [0], "b": [1, 2]})
    assert shares == pytest.approx({"a": 2 / 3.5, "b": 1.5 / 3.5})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_shared_grid_is_sorted_distinct_quantiles_ignoring_nan():
    values = np.array([np.nan, 1, 1, 1, 2, 3, 10])
    grid = shared_grid(values, 5)
    assert np.all(np.diff(grid) > 0)
    assert grid[0] == 1 and grid[-1] == 10
    with pytest.raises(ValueError, match="no finite values"):
        shared_grid(np.array([np.nan]), 5)


def test_ice_mean_is_sklearn_partial_dependence(X):
    y = additive(X)
    model = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, y)
    grid = np.linspace(-0.8, 0.8, 7)
    ours = ice_curves(model.predict, X, 0, grid).mean(axis=0)
    theirs = partial_dependence(
        model, X, [0], custom_values={0: grid}, method="brute", kind="average"
    )["average"][0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_partial_dependence_of_an_additive_function_is_the_component(X):
    grid = np.linspace(-1, 1, 9)
    pd0 = ice_curves(additive, X, 0, grid).mean(axis=0)
    np.testing.assert_allclose(center(pd0), center(grid**2), atol=1e-12)


@pytest.mark.parametrize("column, component", [(0, np.square), (1, lambda g: 3 * g)])
def test_ale_of_an_additive_function_is_the_centred_component(X, column, component):
    edges = shared_grid(X[:, column], 11)
    bins, effects = ale_local_effects(additive, X, column, edges)
    ale = accumulated_local_effects(bins, effects, len(edges))
    # ALE accumulates exact differences of the component, then centres it on the data.
    counts = np.bincount(bins, minlength=len(edges) - 1)
    raw = component(edges) - component(edges[0])
    expected = raw - (counts * (raw[:-1] + raw[1:]) / 2).sum() / counts.sum()
    np.testing.assert_allclose(ale, expected, atol=1e-10)


def test_ale_ignores_rows_outside_the_edges_and_nan():
    X = np.array([[0.5, 0.0], [1.5, 0.0], [np.nan, 0.0], [9.0, 0.0]])
    bins, effects = ale_local_effects(additive, X, 0, np.array([0.0, 1.0, 2.0]))
    assert bins.tolist() == [0, 1, -1, -1]
    np.testing.assert_allclose(effects, [1.0, 3.0, 0.0, 0.0])
    assert accumulated_local_effects(bins[2:], effects[2:], 3).tolist() == [0.0, 0.0, 0.0]


def test_curve_difference_ignores_levels_and_finds_shape_differences():
    rng = np.random.default_rng(1)
    grid = np.linspace(0, 1, 10)
    noise = lambda: rng.normal(0, 0.01, size=(200, 10))  # noqa: E731
    same = curve_difference(grid + noise(), grid + 5 + noise(), alpha=0.05)
    assert same["share_of_grid_differing"] <= 0.1
    steeper = curve_difference(grid + noise(), 3 * grid + noise(), alpha=0.05)
    assert steeper["share_of_grid_differing"] >= 0.8
    assert steeper["max_abs_difference"] == pytest.approx(1.0, abs=0.05)  # |(1-3)(g - 0.5)|


def test_data_support_and_difference_on_the_shared_support_only():
    grid = np.linspace(0, 1, 11)
    support = data_support(np.array([0.25, np.nan, 0.75]), grid)
    assert grid[support].tolist() == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    rng = np.random.default_rng(2)
    a = grid + rng.normal(0, 0.01, size=(100, 11))
    b = np.where(grid < 0.25, 5.0, grid) + rng.normal(0, 0.01, size=(100, 11))
    found = curve_difference(a, b, alpha=0.05, support=support)
    assert found["points_compared"] == 5
    assert found["share_of_grid_differing"] <= 0.2  # the curves differ only off the support
    assert not found["differs"][~support].any()
    single = curve_difference(a, b, alpha=0.05, support=grid == 0.5)
    assert np.isnan(single["share_of_grid_differing"])


def test_shuffle_columns_moves_a_family_jointly_within_strata():
    rng = np.random.default_rng(0)
    X = np.arange(40, dtype=float).reshape(10, 4)
    strata = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    shuffled = shuffle_columns(X, [1, 2], rng, strata)
    np.testing.assert_array_equal(shuffled[:, [0, 3]], X[:, [0, 3]])  # other columns stay
    # Each row got another row's (col 1, col 2) pair, from its own stratum.
    source = (shuffled[:, 1] - 1) / 4
    np.testing.assert_array_equal(shuffled[:, 2], shuffled[:, 1] + 1)
    np.testing.assert_array_equal(strata[source.astype(int)], strata)
    assert sorted(source) == list(range(10)) and (source != np.arange(10)).any()
    assert not np.shares_memory(shuffled, X)


def test_quantile_bins_and_permutation_p_value():
    labels = quantile_bins(np.arange(100.0), 10)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 10))
    assert permutation_p_value(0.5, np.array([0.1, 0.2, 0.6])) == pytest.approx(2 / 4)
    assert permutation_p_value(0.9, np.zeros(19)) == pytest.approx(1 / 20)
