"""Tests of the empirical-Bayes variance calibration and the degenerate-variance flag."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_friedman1

from winnow.explain.forest_calibration import (
    MIN_CALIBRATION_POINTS,
    calibrate_variances,
    fit_variance_prior,
    monte_carlo_noise,
    posterior_mean_variance,
)
from winnow.explain.forest_variance import (
    SubsampleDesign,
    draw_subsamples,
    ij_v_half_variance,
    ij_v_variance,
)
from winnow.explain.vforest import VForestClassifier, VForestRegressor


def noisy_variances(seed: int, m: int, noise_sd: float):
    """The calibration's own model: V ~ Gamma(2, 0.5), full = V + e, half = full + e'."""
    rng = np.random.default_rng(seed)
    true = rng.gamma(2.0, 0.5, m)
    full = true + rng.normal(0, noise_sd, m)
    half = full + rng.normal(0, noise_sd, m)
    return rng, true, full, half


def test_monte_carlo_noise_is_the_mean_squared_half_difference():
    full, half = np.array([1.0, 2.0, 3.0]), np.array([1.5, 1.0, 3.0])
    assert monte_carlo_noise(full, half) == pytest.approx((0.25 + 1.0 + 0.0) / 3)


def test_calibrated_intervals_cover_where_the_noisy_estimates_do_not():
    # A case whose truth is known: theta ~ N(0, V) at each of m points, interval theta-hat = 0
    # +- 1.96 sqrt(variance). With the true V it covers 95%; with the noisy estimate clipped at
    # 0 it under-covers; the calibrated one is within 3 binomial standard errors of 95%.
    m = 4000
    rng, true, full, half = noisy_variances(seed=0, m=m, noise_sd=0.5)
    theta = rng.normal(0, np.sqrt(true))

    def coverage(variance):
        return np.mean(np.abs(theta) <= 1.96 * np.sqrt(variance))

    tolerance = 3 * np.sqrt(0.95 * 0.05 / m)
    assert abs(coverage(true) - 0.95) < tolerance
    assert coverage(np.clip(full, 0, None)) < 0.95 - 5 * tolerance
    calibrated = calibrate_variances(full, half)
    assert abs(coverage(calibrated) - 0.95) < tolerance
    # shrinkage: closer to the truth than the raw estimates, never negative
    assert np.mean((calibrated - true) ** 2) < np.mean((full - true) ** 2)
    assert calibrated.min() >= 0


def test_posterior_mean_follows_the_estimates_when_noise_is_small():
    _, _, full, _ = noisy_variances(seed=1, m=200, noise_sd=0.5)
    grid, weights = fit_variance_prior(full, noise_sd=0.5)
    assert weights.sum() == pytest.approx(1.0) and grid.min() == 0 and np.all(weights > 0)
    sharp = posterior_mean_variance(np.array([0.8, 1.5]), grid, weights, noise_sd=1e-3)
    np.testing.assert_allclose(sharp, [0.8, 1.5], atol=0.01)


def test_posterior_mean_of_a_point_prior_is_the_point():
    grid = np.linspace(0, 2, 201)
    weights = np.zeros_like(grid)
    weights[100] = 1.0  # all prior mass at V = 1
    out = posterior_mean_variance(np.array([-0.5, 0.3, 2.5]), grid, weights, noise_sd=0.4)
    np.testing.assert_allclose(out, 1.0)


def test_small_batches_and_noiseless_estimates_are_not_calibrated():
    _, _, full, half = noisy_variances(seed=2, m=MIN_CALIBRATION_POINTS - 1, noise_sd=0.3)
    assert calibrate_variances(full, half) is None
    _, _, full, _ = noisy_variances(seed=2, m=50, noise_sd=0.3)
    # no Monte-Carlo noise (half = full): the estimates clipped at 0, unchanged otherwise
    np.testing.assert_array_equal(
        calibrate_variances(full - 1, full - 1), np.clip(full - 1, 0, None)
    )


def test_half_forest_estimate_matches_the_estimate_on_half_the_trees():
    rng = np.random.RandomState(0)
    design = draw_subsamples(40, 8, 60, True, None, rng)
    predictions = design.inbag.toarray() @ rng.normal(size=(40, 5))
    half_design = SubsampleDesign(design.inbag[::2], 8, True)
    np.testing.assert_allclose(
        ij_v_half_variance(predictions, design),
        ij_v_variance(predictions[::2], half_design, clip=False),
    )


def test_calibrated_forest_variances_and_the_small_batch_warning():
    X, y = make_friedman1(n_samples=300, noise=1.0, random_state=0)
    forest = VForestRegressor(
        n_estimators=100, subsample_size=30, variance="ij_v", random_state=0
    ).fit(X, y)
    plain = forest.prediction_variance(X[:60])
    forest.set_params(variance="ij_v_calibrated")
    calibrated = forest.prediction_variance(X[:60])
    np.testing.assert_array_equal(calibrated.mean, plain.mean)
    np.testing.assert_array_equal(calibrated.monte_carlo, plain.monte_carlo)
    assert np.all(calibrated.sampling > 0) and not np.allclose(calibrated.sampling, plain.sampling)
    # the calibrated spread across points is smaller: shrinkage toward the prior
    assert calibrated.sampling.std() < plain.sampling.std()
    with pytest.warns(UserWarning, match="at least 20 test points"):
        few = forest.prediction_variance(X[:5])
    np.testing.assert_array_equal(few.sampling, plain.sampling[:5])


def test_degenerate_rows_are_flagged():
    # 10 trees: the bias correction often takes the IJ estimate below zero
    X, y = make_friedman1(n_samples=200, noise=1.0, random_state=0)
    forest = VForestRegressor(
        n_estimators=10, subsample_size=20, variance="ij_v", random_state=0
    ).fit(X, y)
    estimate = forest.prediction_variance(X[:50])
    assert estimate.degenerate.any()
    assert np.all(estimate.sampling[estimate.degenerate] == 0)
    assert np.all(estimate.monte_carlo[estimate.degenerate] > 0)
    assert np.all(estimate.sampling[~estimate.degenerate] > 0)
    # trees that all agree: zero variance, and nothing to flag
    constant = VForestRegressor(n_estimators=10, subsample_size=20, random_state=0)
    flat = constant.fit(X, np.full(len(X), 3.0)).prediction_variance(X[:25])
    assert not flat.degenerate.any() and np.all(flat.total == 0)


def test_classifier_flags_and_calibrates_per_class():
    X, y = make_friedman1(n_samples=200, noise=1.0, random_state=1)
    labels = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    forest = VForestClassifier(
        n_estimators=60, subsample_size=30, variance="ij_v_calibrated", random_state=0
    ).fit(X, labels)
    estimate = forest.predict_proba_variance(X[:40])
    assert estimate.sampling.shape == estimate.degenerate.shape == (40, 3)
    assert np.all(estimate.sampling >= 0)
