"""Quality predictors with uncertainty: how likely each model is to answer each query correctly.

Every estimator has the same two calls (scikit-learn conventions otherwise):

- ``fit(features, quality)``: ``features [n, d]`` float (prompt embeddings), ``quality [n, m]``
  in ``[0, 1]`` (correctness of ``m`` models; NaN marks an unobserved entry); returns ``self``.
- ``predict(features) -> (p_hat, sigma)``: both ``[n, m]``; ``p_hat`` in ``[0, 1]`` estimates
  the probability of a correct answer, ``sigma >= 0`` is a standard error of that estimate (the
  uncertainty of ``p_hat``, not the Bernoulli spread ``sqrt(p (1 - p))`` of one outcome).

How each estimator gets ``sigma``:

- :class:`ConstantQualityEstimator`: each model's training mean; ``sqrt(p (1 - p) / n_m)``.
- :class:`KNNQualityEstimator`: the mean correctness of the ``k`` nearest training prompts
  (cosine), shrunk toward the model's mean by a Beta prior worth ``prior_strength`` queries;
  ``sigma = sqrt(p (1 - p) / k_eff)``, the binomial standard error with ``k_eff`` = observed
  neighbours + ``prior_strength`` (see :func:`smoothed_rate`); never 0, as ``0 < p < 1``.
- :class:`LogisticQualityEstimator`: one L2 logistic regression per model; ``sigma`` by the
  delta method, ``p (1 - p) sqrt(z' Sigma z)``, with ``Sigma`` the Laplace approximation of
  the coefficients' posterior covariance (see :func:`logistic_coefficient_covariance`).
- :class:`MatrixFactorizationQualityEstimator`: EmbedLLM-style ``sigmoid(<x W, v_m> + b_m)``;
  a bootstrap ensemble, ``p_hat`` the members' mean and ``sigma`` their standard deviation.

Calibration metrics are pure functions: :func:`brier_score`, :func:`expected_calibration_error`
and the per-model :func:`calibration_report`; all ignore NaN outcomes.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from winnow.common.extras import require
from winnow.route.exceptions import RouteInputError

__all__ = [
    "ConstantQualityEstimator",
    "KNNQualityEstimator",
    "LogisticQualityEstimator",
    "MatrixFactorizationQualityEstimator",
    "brier_score",
    "calibration_report",
    "expected_calibration_error",
    "factorization_loss",
    "logistic_coefficient_covariance",
    "smoothed_rate",
]

logger = logging.getLogger(__name__)


# -- formulas ---------------------------------------------------------------------------------


def smoothed_rate(
    successes: np.ndarray, trials: np.ndarray, prior_mean: np.ndarray, prior_strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """Beta-smoothed success rate and its binomial standard error.

    ``p = (s + a p0) / (c + a)`` and ``sigma = sqrt(p (1 - p) / (c + a))`` for ``s`` successes
    in ``c`` trials and a ``Beta(a p0, a (1 - p0))`` prior (mean ``p0``, worth ``a`` trials).
    With ``0 < p0 < 1`` and ``a > 0``, ``p`` is strictly inside (0, 1) and ``sigma > 0``.

    Shape:
        ``successes``, ``trials``: ``[n, m]``; ``prior_mean``: ``[m]``; outputs ``[n, m]``.
    """
    k_eff = trials + prior_strength
    p = (successes + prior_strength * prior_mean) / k_eff
    return p, np.sqrt(p * (1.0 - p) / k_eff)


def logistic_coefficient_covariance(features: np.ndarray, p: np.ndarray, C: float) -> np.ndarray:
    """Laplace approximation of the covariance of L2 logistic coefficients ``beta = (w, b)``.

    scikit-learn minimises ``C sum_i logloss_i + ||w||^2 / 2``, which has the same minimum as
    the negative log posterior ``sum_i logloss_i + ||w||^2 / (2 C)`` (a ``N(0, C I)`` prior on
    ``w``, flat on the intercept ``b``). The covariance is the inverse of that posterior's
    Hessian, ``Z' diag(p (1 - p)) Z + diag(1/C, ..., 1/C, 0)`` with ``Z = [features, 1]``; for
    large ``C`` it is the usual inverse Fisher information of the maximum-likelihood fit.

    Shape:
        ``features``: ``[n, d]``; ``p``: ``[n]`` fitted probabilities; returns ``[d + 1, d + 1]``.
    """
    d = features.shape[1]
    design = np.hstack([features, np.ones((features.shape[0], 1))])
    hessian = (design.T * (p * (1.0 - p))) @ design
    hessian[np.arange(d), np.arange(d)] += 1.0 / C
    return np.linalg.pinv(hessian, hermitian=True)


def factorization_loss(
    projection: np.ndarray,
    model_vectors: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    quality: np.ndarray,
    alpha: float,
) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Mean log loss of ``sigmoid(features @ projection @ model_vectors.T + bias)`` plus L2.

    ``loss = mean over observed (i, m) of [log(1 + e^z) - y z] + alpha (||W||^2 + ||V||^2)``
    with ``z = (x_i W) . v_m + b_m``; soft labels ``y`` in ``[0, 1]`` are allowed.

    Shape:
        ``projection W``: ``[d, r]``; ``model_vectors V``: ``[m, r]``; ``bias``: ``[m]``;
        ``features``: ``[n, d]``; ``quality``: ``[n, m]``, NaN = unobserved.

    Returns:
        the loss and its gradients with respect to ``(W, V, bias)``.
    """
    observed = ~np.isnan(quality)
    labels = np.where(observed, quality, 0.0)
    prompts = features @ projection
    logits = prompts @ model_vectors.T + bias
    n_observed = max(int(observed.sum()), 1)
    log_loss = np.where(observed, np.logaddexp(0.0, logits) - labels * logits, 0.0).sum()
    penalty = alpha * (np.sum(projection**2) + np.sum(model_vectors**2))
    residual = np.where(observed, expit(logits) - labels, 0.0) / n_observed
    grad_projection = features.T @ (residual @ model_vectors) + 2 * alpha * projection
    grad_vectors = residual.T @ prompts + 2 * alpha * model_vectors
    return log_loss / n_observed + penalty, (grad_projection, grad_vectors, residual.sum(axis=0))


# -- estimators -------------------------------------------------------------------------------


class ConstantQualityEstimator(BaseEstimator):
    """Each model's mean training correctness, whatever the query: the baseline to beat.

    ``sigma = sqrt(p (1 - p) / n_m)`` with ``n_m`` the model's observed training queries.
    """

    def fit(self, features, quality) -> ConstantQualityEstimator:
        _, quality = _check_fit_inputs(self, features, quality)
        self.mean_ = np.nanmean(quality, axis=0)
        self.n_observed_ = (~np.isnan(quality)).sum(axis=0)
        return self

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        features = _check_predict_inputs(self, features)
        sigma = np.sqrt(self.mean_ * (1 - self.mean_) / self.n_observed_)
        shape = (features.shape[0], self.n_models_)
        return np.broadcast_to(self.mean_, shape).copy(), np.broadcast_to(sigma, shape).copy()


class KNNQualityEstimator(BaseEstimator):
    """Mean correctness of the ``k`` most similar training prompts (cosine), Beta-smoothed.

    Args:
        k: neighbours per query (clipped to the training size).
        prior_strength: weight, in queries, of each model's training mean (itself Laplace-
            smoothed) as the prior of every neighbourhood; > 0, so ``sigma`` is never 0.
        neighbors: ``"auto"`` (FAISS when installed, else scikit-learn), ``"sklearn"`` or
            ``"faiss"``; both search exactly. The one used is ``backend_``.

    Features are L2-normalised, so their scale does not matter.
    """

    def __init__(self, k: int = 25, prior_strength: float = 1.0, neighbors: str = "auto"):
        self.k = k
        self.prior_strength = prior_strength
        self.neighbors = neighbors

    def fit(self, features, quality) -> KNNQualityEstimator:
        _check_int("k", self.k, 1, "e.g. k=25")
        _check_positive("prior_strength", self.prior_strength, "e.g. prior_strength=1.0")
        if self.neighbors not in ("auto", *_NEIGHBOUR_SEARCH):
            raise _invalid(
                "neighbors",
                f"'auto' or one of {sorted(_NEIGHBOUR_SEARCH)}",
                self.neighbors,
                "neighbors='auto' picks FAISS when installed",
            )
        features, quality = _check_fit_inputs(self, features, quality)
        observed = ~np.isnan(quality)
        self.train_features_ = _unit_rows(features).astype(np.float32)
        self.quality_ = quality
        self.prior_ = (np.nansum(quality, axis=0) + 1.0) / (observed.sum(axis=0) + 2.0)
        self.k_ = min(int(self.k), features.shape[0])
        self.backend_ = self._resolve_backend()
        return self

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        features = _check_predict_inputs(self, features)
        search = _NEIGHBOUR_SEARCH[self.backend_]
        index = search(self.train_features_, _unit_rows(features).astype(np.float32), self.k_)
        neighbours = self.quality_[index]  # [n, k, m]
        observed = ~np.isnan(neighbours)
        successes = np.where(observed, neighbours, 0.0).sum(axis=1)
        return smoothed_rate(successes, observed.sum(axis=1), self.prior_, self.prior_strength)

    def _resolve_backend(self) -> str:
        if self.neighbors != "auto":
            if self.neighbors == "faiss":
                require("faiss", "search")
            return self.neighbors
        return "faiss" if _faiss_installed() else "sklearn"


class LogisticQualityEstimator(BaseEstimator):
    """One L2-penalised logistic regression per model on the prompt features.

    Args:
        C: inverse penalty strength, as in :class:`sklearn.linear_model.LogisticRegression`.
        max_iter, tol: of the L-BFGS solver.

    ``sigma`` is the delta-method standard error ``p (1 - p) sqrt(z' Sigma z)`` with
    ``z = (x, 1)`` and ``Sigma`` from :func:`logistic_coefficient_covariance` (the Laplace
    approximation; chosen over a bootstrap as it costs one ``(d + 1)``-square inverse per model
    and needs no seed). With a weak penalty it matches the spread of ``p_hat`` over refits on
    fresh samples; a strong penalty adds the prior's variance. Soft labels in ``[0, 1]``
    are fitted exactly, as a positive and a negative copy of each row weighted ``y`` and
    ``1 - y``. A model whose observed training outcomes are all equal gets an intercept-only
    model at its Laplace-smoothed rate ``(s + 1) / (c + 2)``.

    Learned: ``coef_ [m, d]``, ``intercept_ [m]``, ``covariance_ [m, d + 1, d + 1]``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-6):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, features, quality) -> LogisticQualityEstimator:
        _check_positive("C", self.C, "e.g. C=1.0")
        _check_int("max_iter", self.max_iter, 1, "e.g. max_iter=1000")
        _check_positive("tol", self.tol, "e.g. tol=1e-6")
        features, quality = _check_fit_inputs(self, features, quality)
        fits = [self._fit_one(features, column) for column in quality.T]
        self.coef_ = np.stack([coef for coef, _, _ in fits])
        self.intercept_ = np.array([intercept for _, intercept, _ in fits])
        self.covariance_ = np.stack([covariance for _, _, covariance in fits])
        return self

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        features = _check_predict_inputs(self, features)
        p = expit(features @ self.coef_.T + self.intercept_)
        design = np.hstack([features, np.ones((features.shape[0], 1))])
        variance = np.stack(
            [np.einsum("ni,ij,nj->n", design, cov, design) for cov in self.covariance_], axis=1
        )
        return p, p * (1.0 - p) * np.sqrt(np.maximum(variance, 0.0))

    def _fit_one(self, features: np.ndarray, outcome: np.ndarray):
        observed = ~np.isnan(outcome)
        x, y = features[observed], outcome[observed]
        if np.all(y == y[0]) and y[0] in (0.0, 1.0):
            return self._intercept_only(x, y)
        stacked = np.vstack([x, x])
        labels = np.r_[np.ones(len(y)), np.zeros(len(y))]
        weights = np.r_[y, 1.0 - y]
        keep = weights > 0
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol)
        model.fit(stacked[keep], labels[keep], sample_weight=weights[keep])
        coef, intercept = model.coef_[0], float(model.intercept_[0])
        p = expit(x @ coef + intercept)
        return coef, intercept, logistic_coefficient_covariance(x, p, self.C)

    def _intercept_only(self, x: np.ndarray, y: np.ndarray):
        rate = (y.sum() + 1.0) / (len(y) + 2.0)
        d = x.shape[1]
        covariance = np.zeros((d + 1, d + 1))
        covariance[:d, :d] = self.C * np.eye(d)  # the prior on w: no data moved it
        covariance[d, d] = 1.0 / (len(y) * rate * (1.0 - rate))
        return np.zeros(d), float(np.log(rate / (1.0 - rate))), covariance


class MatrixFactorizationQualityEstimator(BaseEstimator):
    """EmbedLLM-style factorisation: ``p = sigmoid(<x W, v_m> + b_m)``, a bootstrap ensemble.

    A projection ``W [d, r]`` of the prompt features and one vector ``v_m [r]`` and bias per
    model are fitted by L-BFGS on :func:`factorization_loss`. Each of ``n_estimators`` members
    is fitted on a bootstrap resample of the training queries from its own random start;
    ``p_hat`` is the members' mean and ``sigma`` their standard deviation, which measures the
    estimate's sensitivity to the training sample and the start, from few members.

    Args:
        n_factors: ``r``. alpha: L2 weight on ``W`` and ``V``. n_estimators: members, >= 2.
        max_iter: L-BFGS iterations per member. random_state: seeds resamples and starts.

    Learned: ``projections_ [E, d, r]``, ``model_vectors_ [E, m, r]``, ``biases_ [E, m]``.
    """

    def __init__(
        self,
        n_factors: int = 8,
        alpha: float = 1e-3,
        n_estimators: int = 5,
        max_iter: int = 300,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.n_factors = n_factors
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, features, quality) -> MatrixFactorizationQualityEstimator:
        _check_int("n_factors", self.n_factors, 1, "e.g. n_factors=8")
        _check_int("n_estimators", self.n_estimators, 2, "sigma needs >= 2 members, e.g. 5")
        _check_int("max_iter", self.max_iter, 1, "e.g. max_iter=300")
        if not isinstance(self.alpha, Real) or self.alpha < 0:
            raise _invalid("alpha", "a number >= 0", self.alpha, "e.g. alpha=1e-3")
        features, quality = _check_fit_inputs(self, features, quality)
        rng = check_random_state(self.random_state)
        members = []
        for _ in range(self.n_estimators):
            rows = rng.randint(0, features.shape[0], features.shape[0])
            members.append(self._fit_member(features[rows], quality[rows], rng))
        self.projections_ = np.stack([w for w, _, _ in members])
        self.model_vectors_ = np.stack([v for _, v, _ in members])
        self.biases_ = np.stack([b for _, _, b in members])
        return self

    def predict(self, features) -> tuple[np.ndarray, np.ndarray]:
        features = _check_predict_inputs(self, features)
        prompts = np.einsum("nd,edr->enr", features, self.projections_)
        logits = np.einsum("enr,emr->enm", prompts, self.model_vectors_) + self.biases_[:, None]
        members = expit(logits)
        return members.mean(axis=0), members.std(axis=0, ddof=1)

    def _fit_member(self, features: np.ndarray, quality: np.ndarray, rng):
        d, m, r = features.shape[1], quality.shape[1], int(self.n_factors)
        rate = (np.nansum(quality, axis=0) + 1.0) / ((~np.isnan(quality)).sum(axis=0) + 2.0)
        start = np.concatenate(
            [
                rng.normal(0.0, 1.0 / np.sqrt(d), d * r),
                rng.normal(0.0, 1.0 / np.sqrt(r), m * r),
                np.log(rate / (1.0 - rate)),
            ]
        )

        def unpack(theta):
            return theta[: d * r].reshape(d, r), theta[d * r : -m].reshape(m, r), theta[-m:]

        def objective(theta):
            loss, grads = factorization_loss(*unpack(theta), features, quality, self.alpha)
            return loss, np.concatenate([g.ravel() for g in grads])

        result = minimize(
            objective, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter}
        )
        return unpack(result.x)


# -- calibration ------------------------------------------------------------------------------


def brier_score(p_hat, outcome) -> float:
    """Mean of ``(p_hat - outcome)^2`` over entries with an observed (non-NaN) outcome.

    Shape: ``p_hat`` and ``outcome`` of the same shape, any; returns a float (NaN if no outcome
    is observed).
    """
    p, y = _observed_pairs(p_hat, outcome)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def expected_calibration_error(p_hat, outcome, n_bins: int = 10) -> float:
    """``sum_b (n_b / N) |mean(outcome in b) - mean(p_hat in b)|`` over equal-width bins.

    Bin ``b`` holds ``b / n_bins <= p < (b + 1) / n_bins`` (the last bin includes 1). NaN
    outcomes are ignored; ``p_hat`` must lie in ``[0, 1]``.

    >>> round(expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], n_bins=2), 6)
    0.25
    """
    _check_int("n_bins", n_bins, 1, "e.g. n_bins=10")
    p, y = _observed_pairs(p_hat, outcome)
    if not y.size:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(np.intp), n_bins - 1)
    gap = np.bincount(bins, weights=y, minlength=n_bins) - np.bincount(
        bins, weights=p, minlength=n_bins
    )
    return float(np.abs(gap).sum() / y.size)


def calibration_report(p_hat, outcome, models, n_bins: int = 10) -> list[dict]:
    """Per model: ``{"model", "n", "brier", "ece", "mean_predicted", "mean_observed"}``.

    Shape: ``p_hat`` and ``outcome`` ``[n, m]``; ``models``: ``m`` names.
    """
    p_hat, outcome = np.asarray(p_hat, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    models = list(models)
    if p_hat.ndim != 2 or p_hat.shape != outcome.shape or p_hat.shape[1] != len(models):
        raise RouteInputError(
            f"p_hat {p_hat.shape} and outcome {outcome.shape} must both be [n, m] with m = "
            f"len(models) = {len(models)}"
        )
    report = []
    for j, model in enumerate(models):
        observed = ~np.isnan(outcome[:, j])
        report.append(
            {
                "model": model,
                "n": int(observed.sum()),
                "brier": brier_score(p_hat[:, j], outcome[:, j]),
                "ece": expected_calibration_error(p_hat[:, j], outcome[:, j], n_bins),
                "mean_predicted": float(p_hat[observed, j].mean()) if observed.any() else np.nan,
                "mean_observed": float(outcome[observed, j].mean()) if observed.any() else np.nan,
            }
        )
    return report


# -- helpers ----------------------------------------------------------------------------------


def _sklearn_neighbours(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    search = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(train)
    return search.kneighbors(queries, return_distance=False)


def _faiss_neighbours(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    faiss = require("faiss", "search")
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    _, neighbours = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return neighbours


_NEIGHBOUR_SEARCH = {"sklearn": _sklearn_neighbours, "faiss": _faiss_neighbours}


@lru_cache(maxsize=1)
def _faiss_installed() -> bool:
    found = importlib.util.find_spec("faiss") is not None
    logger.info("kNN search backend: %s", "faiss" if found else "scikit-learn (faiss not found)")
    return found


def _check_fit_inputs(estimator, features, quality) -> tuple[np.ndarray, np.ndarray]:
    features = validate_data(estimator, features, reset=True, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    if quality.ndim != 2 or quality.shape[0] != features.shape[0]:
        raise RouteInputError(
            f"quality must be [n_queries, n_models] with n_queries = {features.shape[0]} rows "
            f"like features; got shape {quality.shape}. Fix: for one model pass "
            "quality.reshape(-1, 1)"
        )
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(quality) & ((quality < 0) | (quality > 1))
    if outside.any():
        raise RouteInputError(
            "quality must hold values in [0, 1] (NaN = unobserved); got values outside it in "
            f"columns {sorted(set(np.nonzero(outside)[1].tolist()))}"
        )
    empty = np.flatnonzero(np.isnan(quality).all(axis=0))
    if empty.size:
        raise RouteInputError(f"quality columns {empty.tolist()} have no observed value")
    estimator.n_models_ = quality.shape[1]
    return features, quality


def _check_predict_inputs(estimator, features) -> np.ndarray:
    check_is_fitted(estimator, "n_models_")
    return validate_data(estimator, features, reset=False, dtype=np.float64)


def _observed_pairs(p_hat, outcome) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p_hat, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    if p.shape != y.shape:
        raise RouteInputError(f"p_hat {p.shape} and outcome {y.shape} must have the same shape")
    observed = ~np.isnan(y)
    p, y = p[observed], y[observed]
    if not np.all((p >= 0) & (p <= 1)):
        raise RouteInputError("p_hat must be probabilities in [0, 1] (no NaN) where observed")
    return p, y


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _invalid(name: str, allowed: str, value, fix: str) -> RouteInputError:
    return RouteInputError(f"{name} must be {allowed}; got {value!r}. Fix: {fix}")


def _check_int(name: str, value, minimum: int, fix: str) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise _invalid(name, f"an int >= {minimum}", value, fix)


def _check_positive(name: str, value, fix: str) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not value > 0:
        raise _invalid(name, "a number > 0", value, fix)
