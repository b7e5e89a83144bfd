"""S-LIME: LIME whose sample size is chosen by a CLT test at each LARS step.

LIME explains one prediction by a sparse linear model fitted on perturbed samples around it; with
a fixed sample size, repeated runs select different features. S-LIME (Zhou, Hooker and Wang,
KDD 2021) runs least angle regression step by step and, before each feature enters, tests
whether the leading inactive feature's correlation with the residual really beats the
runner-up's. When it does not, the perturbation set grows to the size at which the observed gap
would be significant (at most doubling, capped at ``n_max``) and selection starts again.

Conventions follow ``lime.lime_tabular`` (continuous features; ``lime_compat`` adds the rest):
gaussian samples scaled by the training standard deviations, kernel ``sqrt(exp(-d^2 / w^2))``
with ``w = 0.75 sqrt(p)``, LARS on kernel-weighted centred data, then a weighted ridge (alpha 1).

The test at LARS step s (see :func:`compare_leading_features`). With kernel-weighted, centred
standardised samples ``x_i``, response ``y_i`` and the residual ``r_i = y_i - x_i . beta_s`` of the
LARS fit after s steps, let ``j1, j2`` be the inactive features with the largest ``|u_j|``, where
``u_j = (1/n) sum_i x_ij r_i``. With ``s_j = sign(u_j)`` and
``d_i = s1 x_i,j1 r_i - s2 x_i,j2 r_i``, the gap ``D = |u1| - |u2| = mean(d)`` has variance
``var(d) / n`` by the CLT, and ``z = D / sqrt(var(d) / n)``. The step passes when
``T = z - z_crit >= -tol``.

Departures from the reference code: (1) j1 and j2 are ordered by the same data, so the paper's
one-sided ``z_{1-alpha}`` passes a true tie with probability about ``2 alpha``; winnow uses
``z_crit = z_{1-alpha/2}``. (2) ``tol`` applies to the standardised statistic, not to
``D - z_crit sd``, whose scale is the model output's. A failed step asks for ``n (z_crit / z)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import Field

from winnow.common.config import Config, load_config
from winnow.common.exceptions import ConfigError
from winnow.explain.exceptions import ExplainInputError, NoLocalSignalError

__all__ = [
    "PerturbationPool",
    "PerturbationSample",
    "SlimeExplanation",
    "SlimeParams",
    "StableLimeExplainer",
    "StepTest",
    "compare_leading_features",
    "explain_column",
    "fit_local_model",
    "lime_kernel",
    "mean_pairwise_jaccard",
    "required_sample_size",
    "select_with_tests",
    "settle_selection",
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
    standardised features (``[len(features)]``; fewer than ``num_features`` only when the model
    is exactly linear in fewer features near the instance), ``tests`` every step test of every
    attempt (``rounds`` attempts in all), and ``converged`` is False when ``n_max`` stopped the
    sample size from growing further. ``n_samples`` is the final sample size, which is also the
    number of model evaluations: a larger set extends the previous one rather than replacing it.
    """

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.column_names[j] for j in self.features)

    @property
    def ranked_features(self) -> tuple[int, ...]:
        """Selected features by decreasing ``|weight|``, the order ``lime`` reports them in."""
        order = np.argsort(-np.abs(self.weights), kind="stable")
        return tuple(self.features[i] for i in order)

    @property
    def rounds(self) -> int:
        """Attempts made: each failed test restarts LARS on a larger sample."""
        return len({t.n for t in self.tests})

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
        names = self.column_names
        return [
            {**asdict(t), "leading": names[t.leading], "runner_up": names[t.runner_up]}
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

    ``x: [n, p]`` kernel-weighted centred samples, ``residual: [n]`` of the current LARS fit,
    ``inactive``: at least two indices not yet in the model. Returns ``(j1, j2, gap, T, z,
    passed)`` as defined in the module docstring.

    Zero spread (every ``d_i`` equal) has no standard error to divide by. If the common value is
    positive, every sample shows the leader ahead: ``z = +inf`` and the step passes. If it is
    zero (for example two identical columns), the data carry no evidence for either order: an
    exact tie, ``z = 0``, and the step fails, so the sample grows (doubling) and, if the tie is
    real, the run ends at ``n_max`` with ``converged=False``.
    """
    inactive = np.asarray(inactive)
    n = x.shape[0]
    products = x[:, inactive] * residual[:, None]
    means = products.mean(axis=0)
    order = np.argsort(-np.abs(means), kind="stable")
    first, second = order[0], order[1]
    d = np.sign(means[first]) * products[:, first] - np.sign(means[second]) * products[:, second]
    gap = float(d.mean())
    spread = float(d.std(ddof=1))
    # Rounding leaves a spread of about 1e-16 |d| on equal values; below 1e-12 |d| it is zero.
    if spread <= 1e-12 * float(np.abs(d).max()):
        z = math.inf if gap > 0 else 0.0
    else:
        z = gap / (spread / math.sqrt(n))
    statistic = z - critical_value(alpha)
    return int(inactive[first]), int(inactive[second]), gap, statistic, z, statistic >= -tol


def required_sample_size(n: int, z: float, alpha: float, n_max: int) -> int:
    """Sample size at which the observed ``z`` would pass: ``n (z_crit / z)^2``.

    Grows by at most a factor of two per attempt and never beyond ``n_max``; at least ``n + 1``
    (unless ``n >= n_max``) so that a failed test always adds data.

    >>> required_sample_size(1000, 1.5, 0.05, 10_000)
    1708
    """
    wanted = 2 * n if z <= 0 else math.ceil(n * (critical_value(alpha) / z) ** 2)
    return int(min(max(wanted, n + 1), 2 * n, n_max))


def select_with_tests(
    x: np.ndarray, y: np.ndarray, num_features: int, alpha: float, tol: float, n_max: int
) -> tuple[list[int], list[StepTest]]:
    """LARS entry order, with a test before each step up to the first failed one.

    ``x: [n, p]`` and ``y: [n]`` are kernel-weighted and centred. Returns at most
    ``num_features`` features in LARS entry order and the tests run (the last one failed, or
    all passed). Fewer features come back when the residual vanishes first (the model is exactly
    linear in them near the instance): no feature enters after that, so there is no choice left
    to test. A step with a single candidate left is not tested either.
    """
    from sklearn.linear_model import lars_path

    _, active, coefs = lars_path(x, y, method="lar", max_iter=num_features)
    n, p = x.shape
    scale = float(np.linalg.norm(y))
    tests: list[StepTest] = []
    for step in range(min(len(active), p - 1)):
        residual = y - x @ coefs[:, step]
        if np.linalg.norm(residual) <= 1e-9 * scale:
            return [int(j) for j in active[:step]], tests
        inactive = [j for j in range(p) if j not in active[:step]]
        j1, j2, gap, statistic, z, passed = compare_leading_features(
            x, residual, inactive, alpha, tol
        )
        requested = n if passed else required_sample_size(n, z, alpha, n_max)
        tests.append(StepTest(step, n, j1, j2, gap, statistic, z, requested, passed))
        if not passed:
            break
    return [int(j) for j in active[:num_features]], tests


@dataclass(frozen=True)
class PerturbationSample:
    """The first ``n`` perturbed rows around one instance; row 0 is the instance itself.

    Shape: ``scaled: [n, p]`` the representation the local model is fitted on (standardised
    values, or 0/1 "same value as the instance" indicators), ``outputs: [n, k]`` model outputs
    (``k = 1`` in regression), ``weights: [n]`` kernel weights in [0, 1].
    """

    scaled: np.ndarray
    outputs: np.ndarray
    weights: np.ndarray


class PerturbationPool:
    """Perturbed rows drawn on demand, so that a larger sample extends a smaller one.

    ``draw(count, first)`` returns ``(scaled, inputs)``, both ``[count, p]``, with row 0 the
    instance when ``first``; ``predict(inputs)`` returns ``[count, k]`` outputs; ``weigh(scaled)``
    returns ``[count]`` kernel weights. Each row goes to the model once, so ``calls`` is the
    number of model evaluations however many labels or attempts read the pool.
    """

    def __init__(self, draw: Callable, predict: Callable, weigh: Callable):
        self._draw, self._predict, self._weigh = draw, predict, weigh
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.calls = 0

    def take(self, n: int) -> PerturbationSample:
        """The first ``n`` rows, drawing and predicting the missing ones."""
        if n > self.calls:
            scaled, inputs = self._draw(n - self.calls, self.calls == 0)
            self._chunks.append((scaled, self._predict(inputs), self._weigh(scaled)))
            self.calls = n
        return PerturbationSample(
            *(np.concatenate(part)[:n] for part in zip(*self._chunks, strict=True))
        )


def weighted_centred(sample: PerturbationSample, column: int) -> tuple[np.ndarray, np.ndarray]:
    """LIME's regression data: ``sqrt(w)``-weighted, weight-centred ``x: [n, p]`` and ``y: [n]``.

    Raises :class:`NoLocalSignalError` when output ``column`` does not vary over the rows with
    weight: LARS would select nothing and any weights would be arbitrary.
    """
    weights = sample.weights
    responses = sample.outputs[:, column]
    centre = np.average(responses, weights=weights)
    spread = math.sqrt(np.average((responses - centre) ** 2, weights=weights))
    if spread <= 1e-12 * abs(centre):
        raise NoLocalSignalError(
            f"predict_fn output column {column} is {centre:.6g} at all {len(responses)} "
            "perturbed rows near the instance, so no feature explains it; fix: explain another "
            "label, or widen the neighbourhood (kernel_width, sample_around_instance=False)"
        )
    root = np.sqrt(weights)[:, None]
    x = (sample.scaled - np.average(sample.scaled, axis=0, weights=weights)) * root
    return x, (responses - centre) * root[:, 0]


def settle_selection(
    pool: PerturbationPool, column: int, params: SlimeParams
) -> tuple[PerturbationSample, list[int], list[StepTest]]:
    """S-LIME's loop: select by LARS with tests; on a failed test, grow the sample and restart.

    Starts at ``params.n_init`` rows of ``pool`` and stops when every step passes or the sample
    reaches ``params.n_max``. Returns the final sample, the features in entry order and every
    test of every attempt.
    """
    n, tests = params.n_init, []
    while True:
        sample = pool.take(n)
        x, y = weighted_centred(sample, column)
        features, attempt = select_with_tests(
            x, y, params.num_features, params.alpha, params.tol, params.n_max
        )
        tests.extend(attempt)
        if not attempt or attempt[-1].passed or attempt[-1].requested_n <= n:
            return sample, features, tests
        n = attempt[-1].requested_n


def fit_local_model(
    sample: PerturbationSample, column: int, features: Sequence[int], regressor=None
) -> tuple[np.ndarray, float, float, float]:
    """LIME's explanation: a kernel-weighted ridge (alpha 1) on the selected features.

    ``regressor`` replaces the ridge (a scikit-learn regressor whose ``fit`` takes
    ``sample_weight``; it is cloned, not changed). Returns ``(coef [len(features)], intercept,
    prediction at the instance, weighted R^2)``.
    """
    from sklearn.base import clone
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=1.0) if regressor is None else clone(regressor)
    x, y = sample.scaled[:, list(features)], sample.outputs[:, column]
    model.fit(x, y, sample_weight=sample.weights)
    coef = np.array(model.coef_, dtype=float).ravel()
    score = float(model.score(x, y, sample_weight=sample.weights))
    return coef, float(np.ravel(model.intercept_)[0]), float(model.predict(x[:1]).ravel()[0]), score


def explain_column(
    pool: PerturbationPool,
    column: int,
    params: SlimeParams,
    column_names: Sequence[str],
    label: int | None,
    regressor=None,
) -> SlimeExplanation:
    """Settle the sample size for output ``column``, then fit the explanation on that sample."""
    sample, features, tests = settle_selection(pool, column, params)
    coef, intercept, local, score = fit_local_model(sample, column, features, regressor)
    converged = not tests or tests[-1].passed
    n, names = sample.scaled.shape[0], tuple(column_names)
    return SlimeExplanation(
        tuple(features), names, coef, intercept, local, score, label, n, converged, tuple(tests)
    )


def model_outputs(predict_fn: Callable, inputs: np.ndarray, mode: str) -> np.ndarray:
    """``predict_fn(inputs)`` as ``[n, k]``: ``k = 1`` in regression, class columns otherwise."""
    out, n = np.asarray(predict_fn(inputs), dtype=float), inputs.shape[0]
    if mode == "regression":
        if out.shape not in ((n,), (n, 1)):
            raise ExplainInputError(
                f"predict_fn returned shape {out.shape} in regression mode; expected "
                f"({n},). Fix: pass model.predict, or mode='classification'"
            )
        return out.reshape(n, 1)
    if out.ndim != 2 or out.shape[0] != n:
        raise ExplainInputError(
            f"predict_fn returned shape {out.shape} in classification mode; expected "
            "[n_samples, n_classes] probabilities. Fix: pass model.predict_proba"
        )
    return out


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

    lime's argument names and result: :class:`~winnow.explain.lime_compat.LimeTabularExplainer`.

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
        ``random_state`` overrides the explainer's seed for this call. Raises
        :class:`NoLocalSignalError` when the explained output is constant near ``data_row``.
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
        origin = (row - self.mean_) / self.scale_
        pool = PerturbationPool(
            lambda count, first: self._draw(row, count, rng, first),
            lambda inputs: model_outputs(predict_fn, inputs, params.mode),
            lambda scaled: lime_kernel(np.linalg.norm(scaled - origin, axis=1), self.kernel_width),
        )
        column = 0
        if params.mode == "classification":
            column = _check_label(pool.take(params.n_init).outputs, label)
        label = None if params.mode == "regression" else column
        return explain_column(pool, column, params, self.feature_names, label)

    def _draw(
        self, row: np.ndarray, count: int, rng: np.random.Generator, first: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        centre = row if self.params.sample_around_instance else self.mean_
        samples = rng.normal(size=(count, self.n_features)) * self.scale_ + centre
        if first:
            samples[0] = row
        return (samples - self.mean_) / self.scale_, samples


def _check_label(outputs: np.ndarray, label: int | None) -> int:
    if label is None:
        return int(np.argmax(outputs[0]))
    if not 0 <= label < outputs.shape[1]:
        raise ExplainInputError(f"label={label} is not a column of the {outputs.shape[1]} classes")
    return int(label)


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
