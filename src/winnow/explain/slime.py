"""S-LIME: LIME whose sample size is chosen by a CLT test at each LARS step.

LIME explains one prediction by a sparse linear model fitted on perturbed samples around it; with
a fixed sample size, repeated runs select different features. S-LIME (Zhou, Hooker and Wang,
KDD 2021) runs least angle regression step by step and, before each feature enters, tests
whether the leading inactive feature's correlation with the residual really beats the
runner-up's. When it does not, the perturbation set grows to the size at which the observed gap
would be significant (at most doubling, capped at ``n_max``) and selection starts again.

Conventions follow ``lime.lime_tabular`` (continuous features, no discretisation) so results are
comparable: gaussian samples scaled by the training standard deviations around the training mean
(or the instance), distances on standardised data, kernel ``sqrt(exp(-d^2 / width^2))`` with
``width = 0.75 sqrt(p)``, LARS on kernel-weighted centred data, and a ridge (alpha = 1) fitted on
the selected features with the kernel weights.

The test at LARS step s (see :func:`compare_leading_features`). With kernel-weighted, centred
standardised samples ``x_i``, response ``y_i`` and the residual ``r_i = y_i - x_i . beta_s`` of the
LARS fit after s steps, let ``j1, j2`` be the inactive features with the largest ``|u_j|``, where
``u_j = (1/n) sum_i x_ij r_i``. With ``s_j = sign(u_j)`` and
``d_i = s1 x_i,j1 r_i - s2 x_i,j2 r_i``, the gap ``D = |u1| - |u2| = mean(d)`` has variance
``var(d) / n`` by the CLT, and ``z = D / sqrt(var(d) / n)``. The step passes when
``T = z - z_crit >= -tol``.

Two deliberate departures from the reference code. (1) Because j1 and j2 are ordered by the
same data, a one-sided test at ``z_{1-alpha}`` (the paper's choice) rejects a true tie with
probability about ``2 alpha``; winnow uses ``z_crit = z_{1-alpha/2}`` so the type-I error is
``alpha``. (2) The reference compares the unstandardised ``D - z_crit sd`` with ``-tol``, so what
``tol`` means depends on the scale of the model's output (with class probabilities,
``tol = 1e-3`` passes every step); winnow applies ``tol`` to the standardised statistic. When a
step fails, the sample size at which the observed ``z`` would pass is ``n (z_crit / z)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from winnow.common.config import Config, load_config
from winnow.common.exceptions import ConfigError
from winnow.explain.exceptions import ExplainInputError

__all__ = [
    "SlimeExplanation",
    "SlimeParams",
    "StableLimeExplainer",
    "StepTest",
    "compare_leading_features",
    "lime_kernel",
    "mean_pairwise_jaccard",
    "required_sample_size",
    "select_with_tests",
]


class SlimeParams(Config):
    """Parameters of :class:`StableLimeExplainer`, validated when the explainer is built."""

    mode: str = Field("regression", pattern="^(regression|classification)$")
    n_init: int = Field(1000, ge=10, description="perturbation samples drawn first, >= 10")
    n_max: int = Field(10000, ge=10, description="largest sample size the test may ask for")
    alpha: float = Field(0.05, gt=0, lt=1, description="level of each step's test, in (0, 1)")
    tol: float = Field(1e-3, ge=0, description="slack on the standardised statistic, >= 0")
    num_features: int = Field(5, ge=1, description="features in the explanation, >= 1")
    kernel_width: float | None = Field(None, gt=0, description="None means 0.75 sqrt(p)")
    sample_around_instance: bool = False
    random_state: int | None = None


@dataclass(frozen=True)
class StepTest:
    """One CLT test before a LARS step: does the leading feature beat the runner-up?"""

    step: int
    n: int
    leading: int
    runner_up: int
    gap: float
    statistic: float
    z: float
    requested_n: int
    passed: bool


@dataclass(frozen=True)
class SlimeExplanation:
    """A local linear explanation with the record of how its sample size was chosen.

    ``features`` are column indices in LARS entry order, ``weights`` the ridge coefficients on
    standardised features (``[num_features]``), ``tests`` every step test of every attempt, and
    ``converged`` is False when ``n_max`` stopped the sample size from growing further.
    ``n_samples`` is the final sample size, which is also the number of model evaluations:
    a larger set extends the previous one rather than replacing it.
    """

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.column_names[j] for j in self.features)

    @property
    def ranked_features(self) -> tuple[int, ...]:
        """Selected features by decreasing ``|weight|``, the order ``lime`` reports them in."""
        order = np.argsort(-np.abs(self.weights), kind="stable")
        return tuple(self.features[i] for i in order)

    features: tuple[int, ...]
    column_names: tuple[str, ...]
    weights: np.ndarray
    intercept: float
    local_prediction: float
    score: float
    label: int | None
    n_samples: int
    converged: bool
    tests: tuple[StepTest, ...]

    def as_list(self) -> list[tuple[str, float]]:
        """``[(feature name, weight), ...]`` in entry order, as ``lime``'s ``as_list``."""
        return [(name, float(w)) for name, w in zip(self.feature_names, self.weights, strict=True)]

    def test_table(self) -> list[dict]:
        """The per-step tests as rows (step, n, leading, runner-up, statistic, requested n)."""
        return [
            {
                "step": t.step,
                "n": t.n,
                "leading": self.column_names[t.leading],
                "runner_up": self.column_names[t.runner_up],
                "gap": t.gap,
                "statistic": t.statistic,
                "z": t.z,
                "requested_n": t.requested_n,
                "passed": t.passed,
            }
            for t in self.tests
        ]


def mean_pairwise_jaccard(rankings: Sequence[Sequence[int]], k: int) -> float:
    """Stability of repeated explanations: mean Jaccard index of their top-``k`` feature sets.

    ``rankings`` holds one ranked feature list per run; 1.0 means every run chose the same
    ``k`` features.

    >>> mean_pairwise_jaccard([[0, 1, 2], [0, 2, 1], [1, 0, 3]], k=2)
    0.5555555555555555
    """
    if len(rankings) < 2:
        raise ExplainInputError("mean_pairwise_jaccard needs at least two runs")
    tops = [set(ranking[:k]) for ranking in rankings]
    scores = [len(a & b) / len(a | b) for i, a in enumerate(tops) for b in tops[i + 1 :]]
    return float(np.mean(scores))


def lime_kernel(distances: np.ndarray, width: float) -> np.ndarray:
    """LIME's exponential kernel ``sqrt(exp(-d^2 / width^2))``; ``distances: [n] >= 0``."""
    return np.sqrt(np.exp(-(distances**2) / width**2))


def critical_value(alpha: float) -> float:
    """``z_{1-alpha/2}``: the two-sided normal quantile (the pair is ordered by the data)."""
    from scipy.stats import norm

    return float(norm.ppf(1.0 - alpha / 2.0))


def compare_leading_features(
    x: np.ndarray, residual: np.ndarray, inactive: Sequence[int], alpha: float, tol: float
) -> tuple[int, int, float, float, float, bool]:
    """CLT test of the top two inactive features' correlation with the residual.

    Parameters
    ----------
    x : [n, p] kernel-weighted, centred samples.
    residual : [n] residual of the current LARS fit.
    inactive : indices not yet in the model, at least two.

    Returns ``(j1, j2, gap, T, z, passed)`` with the quantities defined in the module docstring.
    """
    inactive = np.asarray(inactive)
    n = x.shape[0]
    products = x[:, inactive] * residual[:, None]
    means = products.mean(axis=0)
    order = np.argsort(-np.abs(means), kind="stable")
    first, second = order[0], order[1]
    d = np.sign(means[first]) * products[:, first] - np.sign(means[second]) * products[:, second]
    gap = float(d.mean())
    sd = float(d.std(ddof=1) / math.sqrt(n))
    z = gap / sd if sd > 0 else math.inf
    statistic = z - critical_value(alpha)
    return int(inactive[first]), int(inactive[second]), gap, statistic, z, statistic >= -tol


def required_sample_size(n: int, z: float, alpha: float, n_max: int) -> int:
    """Sample size at which the observed ``z`` would pass: ``n (z_crit / z)^2``.

    Grows by at most a factor of two per attempt and never beyond ``n_max``; at least ``n + 1``
    so that a failed test always adds data.

    >>> required_sample_size(1000, 1.5, 0.05, 10_000)
    1708
    """
    wanted = 2 * n if z <= 0 else math.ceil(n * (critical_value(alpha) / z) ** 2)
    return int(min(max(wanted, n + 1), 2 * n, n_max))


def select_with_tests(
    x: np.ndarray, y: np.ndarray, num_features: int, alpha: float, tol: float, n_max: int
) -> tuple[list[int], list[StepTest]]:
    """LARS entry order, with a test before each step up to the first failed one.

    ``x: [n, p]`` and ``y: [n]`` are kernel-weighted and centred. Returns the first
    ``num_features`` features in LARS entry order and the tests run (the last one failed, or
    all passed).
    """
    from sklearn.linear_model import lars_path

    _, active, coefs = lars_path(x, y, method="lar", max_iter=num_features)
    n, p = x.shape
    tests: list[StepTest] = []
    for step in range(min(num_features, p - 1, coefs.shape[1])):
        residual = y - x @ coefs[:, step]
        inactive = [j for j in range(p) if j not in active[:step]]
        j1, j2, gap, statistic, z, passed = compare_leading_features(
            x, residual, inactive, alpha, tol
        )
        requested = n if passed else required_sample_size(n, z, alpha, n_max)
        tests.append(StepTest(step, n, j1, j2, gap, statistic, z, requested, passed))
        if not passed:
            break
    return [int(j) for j in active[:num_features]], tests


class StableLimeExplainer:
    """Stable LIME for tabular data (regression or classification).

    Parameters
    ----------
    training_data : [n_train, p] float array; its mean and standard deviation set the sampling
        scale, as in ``lime.lime_tabular.LimeTabularExplainer``.
    feature_names : p names; defaults to ``x0 .. x{p-1}``.
    mode, n_init, n_max, alpha, tol, num_features, kernel_width, sample_around_instance,
    random_state : see :class:`SlimeParams`. ``random_state`` is used afresh on each call, so
        the same seed always gives the same explanation.

    Examples
    --------
    >>> explainer = StableLimeExplainer(X_train, n_init=1000, random_state=0)  # doctest: +SKIP
    >>> explanation = explainer.explain_instance(X_test[0], model.predict)  # doctest: +SKIP
    >>> explanation.as_list(), explanation.converged  # doctest: +SKIP
    """

    def __init__(
        self,
        training_data: np.ndarray,
        feature_names: Sequence[str] | None = None,
        **params,
    ):
        try:
            self.params = load_config(SlimeParams, params)
        except ConfigError as exc:
            raise ExplainInputError(str(exc)) from None
        if self.params.n_max < self.params.n_init:
            raise ExplainInputError(
                f"n_max ({self.params.n_max}) must be >= n_init ({self.params.n_init}); "
                "fix: raise n_max or lower n_init"
            )
        data = _finite_matrix(training_data, "training_data")
        self.n_features = data.shape[1]
        if self.n_features < 2:
            raise ExplainInputError("training_data needs at least 2 feature columns to compare")
        self.feature_names = _feature_names(feature_names, self.n_features)
        self.mean_ = data.mean(axis=0)
        scale = data.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.kernel_width = self.params.kernel_width or 0.75 * math.sqrt(self.n_features)

    def explain_instance(
        self,
        data_row: np.ndarray,
        predict_fn: Callable[[np.ndarray], np.ndarray],
        label: int | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> SlimeExplanation:
        """Explain ``predict_fn`` at ``data_row`` ([p]); returns a :class:`SlimeExplanation`.

        ``predict_fn`` maps ``[n, p]`` to ``[n]`` (regression) or ``[n, n_classes]`` class
        probabilities (classification, explaining ``label``, by default the predicted class).
        ``random_state`` overrides the explainer's seed for this call.
        """
        params = self.params
        if params.num_features > self.n_features:
            raise ExplainInputError(
                f"num_features={params.num_features} exceeds the {self.n_features} columns of "
                "training_data; fix: lower num_features"
            )
        row = _finite_matrix(np.asarray(data_row, dtype=float).reshape(1, -1), "data_row")[0]
        if row.shape[0] != self.n_features:
            raise ExplainInputError(
                f"data_row has {row.shape[0]} features, training_data has {self.n_features}"
            )
        rng = np.random.default_rng(params.random_state if random_state is None else random_state)
        samples = self._draw(row, params.n_init, rng, include_instance=True)
        responses, label = self._responses(predict_fn, samples, label)
        tests: list[StepTest] = []
        while True:
            x, y, weights, scaled = self._weighted(samples, responses)
            features, attempt = select_with_tests(
                x, y, params.num_features, params.alpha, params.tol, params.n_max
            )
            tests.extend(attempt)
            n = samples.shape[0]
            if attempt[-1].passed or n >= params.n_max:
                break
            extra = self._draw(row, attempt[-1].requested_n - n, rng, include_instance=False)
            extra_responses, _ = self._responses(predict_fn, extra, label)
            samples = np.vstack([samples, extra])
            responses = np.concatenate([responses, extra_responses])
        return self._fit_ridge(scaled, responses, weights, features, label, tests)

    def _draw(
        self, row: np.ndarray, count: int, rng: np.random.Generator, include_instance: bool
    ) -> np.ndarray:
        centre = row if self.params.sample_around_instance else self.mean_
        samples = rng.normal(size=(count, self.n_features)) * self.scale_ + centre
        if include_instance:
            samples[0] = row
        return samples

    def _responses(
        self, predict_fn: Callable, samples: np.ndarray, label: int | None
    ) -> tuple[np.ndarray, int | None]:
        out = np.asarray(predict_fn(samples), dtype=float)
        if self.params.mode == "regression":
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            if out.shape != (samples.shape[0],):
                raise ExplainInputError(
                    f"predict_fn returned shape {out.shape} in regression mode; expected "
                    f"({samples.shape[0]},). Fix: pass model.predict, or mode='classification'"
                )
            return out, None
        if out.ndim != 2:
            raise ExplainInputError(
                f"predict_fn returned shape {out.shape} in classification mode; expected "
                "[n_samples, n_classes] probabilities. Fix: pass model.predict_proba"
            )
        if label is None:
            label = int(np.argmax(out[0]))
        if not 0 <= label < out.shape[1]:
            raise ExplainInputError(f"label={label} is not a column of the {out.shape[1]} classes")
        return out[:, label], label

    def _weighted(self, samples: np.ndarray, responses: np.ndarray):
        scaled = (samples - self.mean_) / self.scale_
        distances = np.linalg.norm(scaled - scaled[0], axis=1)
        weights = lime_kernel(distances, self.kernel_width)
        root = np.sqrt(weights)[:, None]
        x = (scaled - np.average(scaled, axis=0, weights=weights)) * root
        y = (responses - np.average(responses, weights=weights)) * root[:, 0]
        return x, y, weights, scaled

    def _fit_ridge(self, scaled, responses, weights, features, label, tests):
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=1.0, fit_intercept=True)
        model.fit(scaled[:, features], responses, sample_weight=weights)
        return SlimeExplanation(
            features=tuple(features),
            column_names=self.feature_names,
            weights=model.coef_.copy(),
            intercept=float(model.intercept_),
            local_prediction=float(model.predict(scaled[:1, features])[0]),
            score=float(model.score(scaled[:, features], responses, sample_weight=weights)),
            label=label,
            n_samples=scaled.shape[0],
            converged=tests[-1].passed,
            tests=tuple(tests),
        )


def _finite_matrix(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ExplainInputError(f"{name} must be 2-dimensional [rows, features], got {array.shape}")
    if not np.isfinite(array).all():
        raise ExplainInputError(f"{name} contains NaN or infinity; fix: impute or drop those rows")
    return array


def _feature_names(names: Sequence[str] | None, count: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"x{j}" for j in range(count))
    if len(names) != count:
        raise ExplainInputError(f"feature_names has {len(names)} names for {count} columns")
    return tuple(str(name) for name in names)
