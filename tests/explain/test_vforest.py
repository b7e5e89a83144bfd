"""Tests of winnow.explain.vforest: variance formulas, subsample design, estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_friedman1
from sklearn.utils.estimator_checks import parametrize_with_checks

from winnow.explain.exceptions import ExplainInputError
from winnow.explain.plots import plot_forest_ribbon
from winnow.explain.vforest import (
    ForestVariance,
    SubsampleDesign,
    VForestClassifier,
    VForestRegressor,
    draw_subsamples,
    ij_v_variance,
    internal_corrected_variance,
    internal_variance,
    monte_carlo_variance,
)


def reference_ij(predictions, counts, corrected=True):
    """The IJ formula point by point with np.cov (1/B normalisation), unclipped."""
    n_trees, n_points = predictions.shape
    out = np.zeros(n_points)
    for j in range(n_points):
        for i in range(counts.shape[1]):
            cov = np.cov(counts[:, i], predictions[:, j], bias=True)
            out[j] += cov[0, 1] ** 2
            if corrected:
                out[j] -= cov[0, 0] * cov[1, 1] / n_trees
    return out


@pytest.fixture(scope="module")
def friedman():
    X, y = make_friedman1(n_samples=120, noise=1.0, random_state=0)
    return X, y


# -- pure functions against direct computations ------------------------------------------------


def test_ij_v_matches_direct_formula():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, size=(9, 6))
    # predictions that depend on the counts, so the corrected value is clearly positive
    predictions = counts @ rng.normal(size=(6, 4)) + 0.1 * rng.normal(size=(9, 4))
    design = SubsampleDesign(sp.csr_matrix(counts), subsample_size=5, replace=True)
    expected = reference_ij(predictions, counts)
    assert np.all(expected > 0)
    np.testing.assert_allclose(ij_v_variance(predictions, design), expected, rtol=1e-12)
    # chunking over test points does not change the result
    chunked = ij_v_variance(predictions, design, chunk_elements=6)
    np.testing.assert_allclose(chunked, expected, rtol=1e-12)


def test_ij_v_without_replacement_applies_finite_population_factor():
    rng = np.random.default_rng(1)
    counts = (rng.random((12, 8)) < 0.25).astype(int)
    predictions = counts @ rng.normal(size=(8, 3))
    design = SubsampleDesign(sp.csr_matrix(counts), subsample_size=2, replace=False)
    expected = np.clip(reference_ij(predictions, counts), 0, None) * (8 / (8 - 2)) ** 2
    np.testing.assert_allclose(ij_v_variance(predictions, design), expected, rtol=1e-12)


def test_internal_estimators_match_direct_formulas():
    rng = np.random.default_rng(2)
    n_groups, per_group, n_points, k, n = 4, 5, 3, 7, 40
    groups = rng.permutation(np.repeat(np.arange(n_groups), per_group))
    predictions = rng.normal(size=(n_groups * per_group, n_points)) + groups[:, None]
    design = SubsampleDesign(
        sp.csr_matrix((n_groups * per_group, n)), subsample_size=k, replace=True, groups=groups
    )
    means = np.array([predictions[groups == g].mean(axis=0) for g in range(n_groups)])
    within = np.array([predictions[groups == g].var(axis=0, ddof=1) for g in range(n_groups)])
    zeta_1 = np.var(means, axis=0, ddof=1)
    np.testing.assert_allclose(internal_variance(predictions, design), k**2 / n * zeta_1)
    corrected = np.clip(zeta_1 - within.mean(axis=0) / per_group, 0, None)
    assert np.all(corrected > 0)
    np.testing.assert_allclose(
        internal_corrected_variance(predictions, design), k**2 / n * corrected
    )
    np.testing.assert_allclose(
        monte_carlo_variance(predictions), predictions.var(axis=0) / len(predictions)
    )


def test_internal_estimators_need_equal_groups():
    design = SubsampleDesign(
        sp.csr_matrix((5, 10)), subsample_size=3, replace=True, groups=np.array([0, 0, 0, 1, 1])
    )
    with pytest.raises(ExplainInputError, match="equal groups"):
        internal_variance(np.zeros((5, 2)), design)
    with pytest.raises(ExplainInputError, match="grouped design"):
        internal_variance(np.zeros((5, 2)), SubsampleDesign(design.inbag, 3, True))


def test_ij_v_is_zero_for_constant_trees():
    design = draw_subsamples(30, 6, 50, True, None, np.random.RandomState(0))
    assert np.all(ij_v_variance(np.full((50, 4), 2.5), design) == 0)


def test_ij_v_bias_correction_removes_noise_variance():
    # Tree predictions independent of the counts: the true sampling variance is 0.
    n_trees, n_train, k, n_points = 100, 40, 8, 400
    design = draw_subsamples(n_train, k, n_trees, True, None, np.random.RandomState(3))
    noise = np.random.default_rng(3).normal(size=(n_trees, n_points))
    counts = design.inbag.toarray()
    raw = reference_ij(noise, counts, corrected=False)
    unclipped = reference_ij(noise, counts, corrected=True)
    # E[raw] = sum_i Var(N_i) Var(t) / B ~ k / B
    assert raw.mean() > 0.5 * k / n_trees
    assert abs(unclipped.mean()) < 4 * unclipped.std() / np.sqrt(n_points)
    assert ij_v_variance(noise, design).mean() < 0.25 * raw.mean()


# -- the subsample design -----------------------------------------------------------------------


@pytest.mark.parametrize("replace", [True, False])
def test_inbag_counts_are_sparse_and_sum_to_k(friedman, replace):
    X, y = friedman
    forest = VForestRegressor(
        n_estimators=30, subsample_size=15, replace=replace, random_state=0
    ).fit(X, y)
    inbag = forest.inbag_
    assert sp.issparse(inbag) and inbag.format == "csr" and inbag.dtype == np.int32
    assert inbag.shape == (30, len(X))
    np.testing.assert_array_equal(np.asarray(inbag.sum(axis=1)).ravel(), 15)
    assert np.all(np.diff(inbag.indptr) <= 15)
    if not replace:
        assert set(np.unique(inbag.data)) == {1}


def test_grouped_design_shares_one_row_per_group(friedman):
    X, y = friedman
    forest = VForestRegressor(
        n_estimators=23, subsample_size=5, variance="internal", n_groups=4, random_state=0
    ).fit(X, y)
    assert forest.n_groups_ == 4 and len(forest.estimators_) == 20
    counts = forest.inbag_.toarray() > 0
    for g in range(4):
        assert counts[forest.tree_groups_ == g].all(axis=0).any()
    np.testing.assert_array_equal(np.asarray(forest.inbag_.sum(axis=1)).ravel(), 5)


def test_same_seed_same_forest_for_any_n_jobs(friedman):
    X, y = friedman
    fits = [
        VForestRegressor(n_estimators=40, subsample_size=0.2, random_state=7, n_jobs=n_jobs).fit(
            X, y
        )
        for n_jobs in (1, 2)
    ]
    assert (fits[0].inbag_ != fits[1].inbag_).nnz == 0
    a, b = (fit.prediction_variance(X[:30]) for fit in fits)  # 30 points: calibrated
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.sampling, b.sampling)
    np.testing.assert_array_equal(a.monte_carlo, b.monte_carlo)


# -- predictions and intervals ------------------------------------------------------------------


@pytest.mark.parametrize("variance", ["ij_v", "internal", "internal_corrected"])  # 7 points
def test_regressor_interval_contains_mean(friedman, variance):
    X, y = friedman
    forest = VForestRegressor(
        n_estimators=40, subsample_size=20, variance=variance, random_state=0
    ).fit(X, y)
    estimate = forest.prediction_variance(X[:7])
    assert isinstance(estimate, ForestVariance)
    assert estimate.mean.shape == estimate.sampling.shape == (7,)
    np.testing.assert_allclose(estimate.total, estimate.sampling + estimate.monte_carlo)
    np.testing.assert_allclose(forest.predict(X[:7]), estimate.mean)
    mean, std = forest.predict(X[:7], return_std=True)
    np.testing.assert_allclose(std, np.sqrt(estimate.total))
    interval = forest.predict_interval(X[:7], alpha=0.1)
    assert interval.shape == (7, 2)
    assert np.all(interval[:, 0] <= mean) and np.all(mean <= interval[:, 1])
    assert np.all(estimate.sampling >= 0) and np.all(estimate.monte_carlo >= 0)


def test_classifier_probabilities_and_intervals(friedman):
    X, y = friedman
    labels = np.array(["low", "mid", "high"])[np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))]
    forest = VForestClassifier(n_estimators=40, subsample_size=10, random_state=0).fit(X, labels)
    assert list(forest.classes_) == ["high", "low", "mid"]
    proba = forest.predict_proba(X[:24])
    assert proba.shape == (24, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    assert set(forest.predict(X[:24])) <= set(forest.classes_)
    estimate = forest.predict_proba_variance(X[:24])
    assert estimate.sampling.shape == estimate.monte_carlo.shape == (24, 3)
    interval = forest.predict_proba_interval(X[:24])
    assert interval.shape == (24, 3, 2)
    assert np.all((interval >= 0) & (interval <= 1))
    assert np.all(interval[..., 0] <= proba + 1e-12) and np.all(proba <= interval[..., 1] + 1e-12)


def test_classifier_variance_is_per_class_column(friedman):
    X, y = friedman
    labels = (y > np.median(y)).astype(int)
    forest = VForestClassifier(
        n_estimators=30, subsample_size=12, variance="ij_v", random_state=1
    ).fit(X, labels)
    estimate = forest.predict_proba_variance(X[:5])
    design = SubsampleDesign(forest.inbag_, 12, True)
    tree_proba = np.stack(
        [forest._tree_outputs(t, X[:5].astype(np.float32)) for t in forest.estimators_]
    )
    np.testing.assert_allclose(estimate.sampling[:, 1], ij_v_variance(tree_proba[:, :, 1], design))
    # binary probabilities are complements, so both columns have the same variance
    np.testing.assert_allclose(estimate.sampling[:, 0], estimate.sampling[:, 1], atol=1e-12)


def test_ij_v_variance_tracks_replicate_variance():
    # Fixed seeds: the mean estimate over 30 training sets against their empirical variance.
    x_test = make_friedman1(n_samples=1, random_state=99)[0]
    predictions, variances = [], []
    for rep in range(30):
        X, y = make_friedman1(n_samples=200, noise=1.0, random_state=100 + rep)
        forest = VForestRegressor(
            n_estimators=200, subsample_size=20, variance="ij_v", random_state=rep
        )  # one test point: the uncalibrated estimate
        mean, std = forest.fit(X, y).predict(x_test, return_std=True)
        predictions.append(mean[0])
        variances.append(std[0] ** 2)
    ratio = np.mean(variances) / np.var(predictions, ddof=1)
    assert 0.5 < ratio < 2.0


def test_plot_forest_ribbon_returns_figure():
    grid = np.linspace(0, 1, 5)
    fig = plot_forest_ribbon(grid, grid, grid - 0.1, grid + 0.1, "x_0", truth=grid)
    assert fig.axes[0].get_xlabel() == "x_0"


# -- contract and errors ------------------------------------------------------------------------


@parametrize_with_checks(
    [
        VForestRegressor(n_estimators=10),
        VForestRegressor(n_estimators=10, variance="internal_corrected"),
        VForestClassifier(n_estimators=10),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_subsample_larger_than_n_without_replacement(friedman):
    X, y = friedman
    with pytest.raises(ExplainInputError) as error:
        VForestRegressor(n_estimators=5, subsample_size=500, replace=False).fit(X, y)
    message = str(error.value)
    for part in ("subsample_size=500", "n=120", "replace=True", "subsample_size <= 120"):
        assert part in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"variance": "jackknife"}, r"variance must be one of .*'ij_v'.*got 'jackknife'"),
        ({"n_estimators": 0}, "n_estimators must be an int >= 1; got 0"),
        ({"subsample_size": 1.5}, "subsample_size must be .*got 1.5"),
        ({"variance": "internal", "n_groups": 1}, r"n_groups must be .*\[2, .*got 1"),
        ({"variance": "internal", "n_groups": 30, "n_estimators": 20}, "n_groups .*got 30"),
        ({"variance": "internal", "n_estimators": 3}, "n_estimators must be at least 4"),
        ({"replace": False, "subsample_size": 1.0}, "ij_v variance is undefined"),
    ],
)
def test_bad_parameters_fail_at_fit_with_clear_message(friedman, params, match):
    X, y = friedman
    with pytest.raises(ExplainInputError, match=match):
        VForestRegressor(**params).fit(X, y)


def test_tree_parameters_are_validated_by_the_tree(friedman):
    X, y = friedman
    with pytest.raises(ValueError, match="'max_depth' parameter"):
        VForestRegressor(n_estimators=3, max_depth=-1).fit(X, y)


def test_bad_inputs_raise_sklearn_value_errors(friedman):
    X, y = friedman
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VForestRegressor(n_estimators=5).fit(bad, y)
    forest = VForestRegressor(n_estimators=5, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        forest.predict_interval(bad)
    with pytest.raises(ValueError, match="expecting 10 features"):
        forest.prediction_variance(X[:, :4])


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "0.05"])
def test_alpha_outside_unit_interval(friedman, alpha):
    X, y = friedman
    forest = VForestClassifier(n_estimators=5, random_state=0).fit(X, y > 14)
    with pytest.raises(ExplainInputError, match=r"alpha must be a float in \(0, 1\)"):
        forest.predict_proba_interval(X[:2], alpha=alpha)
