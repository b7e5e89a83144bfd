"""Tests of winnow.route.estimators (prompt features: tests/route/test_embeddings.py)."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)
from threadpoolctl import threadpool_limits

from winnow.route import estimators
from winnow.route.datasets import load_routerbench, shared_prefixes, strip_prefixes
from winnow.route.embeddings import TfidfEmbedder
from winnow.route.estimators import (
    ConstantQualityEstimator,
    KNNQualityEstimator,
    LogisticQualityEstimator,
    MatrixFactorizationQualityEstimator,
    brier_score,
    calibration_report,
    expected_calibration_error,
    factorization_loss,
    logistic_coefficient_covariance,
    smoothed_rate,
)
from winnow.route.exceptions import RouteInputError

ESTIMATORS = [
    ConstantQualityEstimator(),
    KNNQualityEstimator(k=5),
    LogisticQualityEstimator(),
    MatrixFactorizationQualityEstimator(n_factors=3, n_estimators=3, random_state=0),
]


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    # Two BLAS threads on two busy shared cores run the SVD and solvers ~10x slower than one.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 6))
    weights = rng.normal(size=(6, 3))
    quality = (rng.uniform(size=(120, 3)) < expit(features @ weights)).astype(float)
    quality[rng.uniform(size=quality.shape) < 0.05] = np.nan
    return features, quality


@pytest.fixture(scope="module")
def routerbench_tfidf():
    train, test = load_routerbench("train"), load_routerbench("test")
    prefixes = shared_prefixes(train.prompts, train.tasks)
    train_texts = strip_prefixes(train.prompts, train.tasks, prefixes)
    test_texts = strip_prefixes(test.prompts, test.tasks, prefixes)
    embedder = TfidfEmbedder(n_components=64).fit(train_texts)
    return embedder.transform(train_texts), train.quality, embedder.transform(test_texts), test


# -- formulas ---------------------------------------------------------------------------------


def test_public_names():
    for name in estimators.__all__:
        assert hasattr(estimators, name)


def test_smoothed_rate_closed_form():
    p, sigma = smoothed_rate(
        np.array([[3.0, 0.0]]), np.array([[4.0, 4.0]]), np.array([0.5, 0.2]), 2.0
    )
    np.testing.assert_allclose(p, [[(3 + 1) / 6, (0 + 0.4) / 6]])
    np.testing.assert_allclose(sigma, np.sqrt(p * (1 - p) / 6))
    assert np.all(sigma > 0)


def test_brier_score_by_hand():
    assert brier_score([0.1, 0.9, 0.5], [0, 1, 1]) == pytest.approx((0.01 + 0.01 + 0.25) / 3)
    assert brier_score([0.1, 0.3, 0.5], [0, np.nan, 1]) == pytest.approx((0.01 + 0.25) / 2)
    assert np.isnan(brier_score([0.5], [np.nan]))


def test_ece_by_hand():
    # each occupied bin's mean prediction equals its observed rate: perfectly calibrated
    p = [0.25] * 4 + [0.75] * 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(0.0)
    # bins of width 0.5: |1/2 - 0.2| * 2/4 + |2/2 - 0.8| * 2/4 = 0.15 + 0.1
    assert expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], 2) == pytest.approx(0.25)
    # p = 1 falls in the last bin; a NaN outcome is ignored
    assert expected_calibration_error([1.0, 0.0, 0.3], [1, 0, np.nan]) == pytest.approx(0.0)
    with pytest.raises(RouteInputError, match=r"p_hat must be probabilities in \[0, 1\]"):
        expected_calibration_error([1.5], [1])


def test_calibration_report_per_model():
    p_hat = np.array([[0.1, 0.5], [0.9, 0.5]])
    outcome = np.array([[0.0, 1.0], [1.0, np.nan]])
    report = calibration_report(p_hat, outcome, ["a", "b"])
    assert [row["model"] for row in report] == ["a", "b"]
    assert report[0]["brier"] == pytest.approx(0.01) and report[0]["n"] == 2
    assert report[1] == {
        "model": "b",
        "n": 1,
        "brier": pytest.approx(0.25),
        "ece": pytest.approx(0.5),
        "mean_predicted": pytest.approx(0.5),
        "mean_observed": pytest.approx(1.0),
    }
    with pytest.raises(RouteInputError, match="len\\(models\\) = 3"):
        calibration_report(p_hat, outcome, ["a", "b", "c"])


def test_factorization_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    d, m, r, n = 4, 3, 2, 7
    features, quality = rng.normal(size=(n, d)), rng.uniform(size=(n, m))
    quality[0, 1] = np.nan
    params = [rng.normal(size=(d, r)), rng.normal(size=(m, r)), rng.normal(size=m)]
    _, grads = factorization_loss(*params, features, quality, alpha=0.1)
    step = 1e-6
    for block, grad in zip(params, grads, strict=True):
        for index in np.ndindex(block.shape):
            original = block[index]
            block[index] = original + step
            up, _ = factorization_loss(*params, features, quality, alpha=0.1)
            block[index] = original - step
            down, _ = factorization_loss(*params, features, quality, alpha=0.1)
            block[index] = original
            assert grad[index] == pytest.approx((up - down) / (2 * step), abs=1e-7)


def test_logistic_covariance_is_inverse_numerical_hessian():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(50, 3))
    labels = (rng.uniform(size=50) < expit(features[:, 0])).astype(float)
    C = 0.7
    beta = np.r_[rng.normal(size=3), 0.3]
    design = np.hstack([features, np.ones((50, 1))])

    def gradient(b):  # of sum(logloss) + ||w||^2 / (2 C), intercept unpenalised
        return design.T @ (expit(design @ b) - labels) + np.r_[b[:3], 0.0] / C

    hessian = np.stack(
        [(gradient(beta + 1e-6 * e) - gradient(beta - 1e-6 * e)) / 2e-6 for e in np.eye(4)]
    )
    covariance = logistic_coefficient_covariance(features, expit(design @ beta), C)
    np.testing.assert_allclose(covariance, np.linalg.inv(hessian), rtol=1e-5, atol=1e-8)


# -- estimator contracts ----------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_predictions_have_shape_and_range(estimator, toy):
    features, quality = toy
    fitted = clone(estimator).fit(features[:100], quality[:100])
    assert fitted.n_models_ == 3 and fitted.n_features_in_ == 6
    p_hat, sigma = fitted.predict(features[100:])
    assert p_hat.shape == sigma.shape == (20, 3)
    assert np.all((p_hat >= 0) & (p_hat <= 1)) and np.all(sigma >= 0)
    assert np.all(np.isfinite(sigma))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_sklearn_contract(estimator, toy):
    name = type(estimator).__name__
    check_no_attributes_set_in_init(name, estimator)
    check_parameters_default_constructible(name, estimator)
    check_get_params_invariance(name, estimator)
    check_set_params(name, estimator)
    with pytest.raises(NotFittedError):
        clone(estimator).predict(toy[0])
    fitted = clone(estimator)
    assert fitted.fit(*toy) is fitted
    with pytest.raises(ValueError, match="features"):
        fitted.predict(toy[0][:, :4])
    restored = pickle.loads(pickle.dumps(fitted))
    for a, b in zip(restored.predict(toy[0]), fitted.predict(toy[0]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_quality_is_validated(estimator, toy):
    features, quality = toy
    with pytest.raises(RouteInputError, match=r"reshape\(-1, 1\)"):
        clone(estimator).fit(features, quality[:, 0])
    with pytest.raises(RouteInputError, match=r"values in \[0, 1\].*columns \[1\]"):
        clone(estimator).fit(features, np.where(np.arange(3) == 1, 2.0, quality))
    with pytest.raises(RouteInputError, match=r"columns \[0\] have no observed value"):
        clone(estimator).fit(features, np.where(np.arange(3) == 0, np.nan, quality))


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (KNNQualityEstimator(k=0), "k must be an int >= 1; got 0"),
        (KNNQualityEstimator(prior_strength=0), "prior_strength must be a number > 0"),
        (KNNQualityEstimator(neighbors="annoy"), "neighbors must be 'auto' or one of"),
        (LogisticQualityEstimator(C=-1), "C must be a number > 0; got -1"),
        (MatrixFactorizationQualityEstimator(n_estimators=1), "n_estimators must be an int >= 2"),
    ],
)
def test_bad_parameters_are_named(estimator, message, toy):
    with pytest.raises(RouteInputError, match=message):
        estimator.fit(*toy)


def test_constant_predicts_training_means(toy):
    features, quality = toy
    p_hat, sigma = ConstantQualityEstimator().fit(features, quality).predict(features[:2])
    np.testing.assert_allclose(p_hat, np.tile(np.nanmean(quality, axis=0), (2, 1)))
    n = (~np.isnan(quality)).sum(axis=0)
    np.testing.assert_allclose(sigma[0], np.sqrt(p_hat[0] * (1 - p_hat[0]) / n))


# -- kNN ----------------------------------------------------------------------------------------


def test_knn_with_one_neighbour_reproduces_training_points():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 8))
    quality = rng.integers(0, 2, size=(60, 4)).astype(float)
    knn = KNNQualityEstimator(k=1, prior_strength=0.1).fit(features, quality)
    p_hat, sigma = knn.predict(features)
    assert np.all(np.abs(p_hat - quality) <= 0.1 / 1.1 + 1e-12)
    assert np.array_equal(np.round(p_hat), quality)
    assert np.all(sigma > 0)


def test_knn_never_predicts_certainty():
    features = np.random.default_rng(4).normal(size=(30, 3))
    p_hat, sigma = KNNQualityEstimator(k=30).fit(features, np.ones((30, 2))).predict(features)
    assert np.all(p_hat < 1) and np.all(sigma > 0)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")
def test_knn_faiss_and_sklearn_agree(toy):
    features, quality = toy
    by_faiss = KNNQualityEstimator(k=7, neighbors="faiss").fit(features[:100], quality[:100])
    by_sklearn = KNNQualityEstimator(k=7, neighbors="sklearn").fit(features[:100], quality[:100])
    assert by_faiss.backend_ == "faiss" and by_sklearn.backend_ == "sklearn"
    for a, b in zip(
        by_faiss.predict(features[100:]), by_sklearn.predict(features[100:]), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-12)


# -- logistic ---------------------------------------------------------------------------------


def test_logistic_agrees_with_sklearn():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 4))
    labels = (rng.uniform(size=200) < expit(features @ [1.0, -2.0, 0.5, 0.0] + 0.3)).astype(float)
    ours = LogisticQualityEstimator(C=0.5, tol=1e-10).fit(features, labels[:, None])
    reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=1000).fit(features, labels)
    np.testing.assert_allclose(ours.coef_[0], reference.coef_[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        ours.predict(features)[0][:, 0], reference.predict_proba(features)[:, 1], atol=1e-6
    )


def test_logistic_soft_labels_match_the_mean():
    # with an unpenalised intercept the fitted probabilities sum to the (soft) labels' sum
    rng = np.random.default_rng(6)
    features = rng.normal(size=(80, 3))
    soft = rng.uniform(size=(80, 1))
    p_hat, _ = LogisticQualityEstimator(tol=1e-10).fit(features, soft).predict(features)
    assert p_hat.mean() == pytest.approx(soft.mean(), abs=1e-6)


def test_logistic_sigma_matches_sampling_spread():
    rng = np.random.default_rng(7)
    point, truth = np.array([[0.5, -0.5]]), np.array([1.0, -1.0])
    estimates, sigmas = [], []
    for _ in range(60):
        features = rng.normal(size=(300, 2))
        labels = (rng.uniform(size=300) < expit(features @ truth)).astype(float)
        p_hat, sigma = (
            LogisticQualityEstimator(C=100.0).fit(features, labels[:, None]).predict(point)
        )
        estimates.append(p_hat[0, 0])
        sigmas.append(sigma[0, 0])
    assert np.mean(sigmas) == pytest.approx(np.std(estimates, ddof=1), rel=0.3)


def test_logistic_handles_a_model_that_is_always_right(toy):
    features, _ = toy
    quality = np.c_[np.ones(120), np.r_[np.ones(60), np.zeros(60)]]
    p_hat, sigma = LogisticQualityEstimator().fit(features, quality).predict(features[:3])
    np.testing.assert_allclose(p_hat[:, 0], 121 / 122)
    assert np.all(sigma[:, 0] > 0)


# -- matrix factorisation ---------------------------------------------------------------------


def test_factorization_is_seeded_and_has_spread(toy):
    features, quality = toy
    first = MatrixFactorizationQualityEstimator(random_state=0).fit(features, quality)
    again = MatrixFactorizationQualityEstimator(random_state=0).fit(features, quality)
    np.testing.assert_array_equal(first.predict(features)[0], again.predict(features)[0])
    assert first.projections_.shape == (5, 6, 8) and first.model_vectors_.shape == (5, 3, 8)
    assert np.all(first.predict(features)[1] > 0)


# -- on real data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "estimator",
    [
        KNNQualityEstimator(),
        LogisticQualityEstimator(),
        MatrixFactorizationQualityEstimator(random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_estimators_beat_the_constant_on_routerbench(estimator, routerbench_tfidf):
    train_x, train_y, test_x, test = routerbench_tfidf
    baseline, _ = ConstantQualityEstimator().fit(train_x, train_y).predict(test_x)
    p_hat, sigma = clone(estimator).fit(train_x, train_y).predict(test_x)
    assert p_hat.shape == sigma.shape == (test.n_queries, 11)
    assert brier_score(p_hat, test.quality) <= brier_score(baseline, test.quality)
