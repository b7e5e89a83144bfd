"""Random forests of with-replacement subsamples (V-statistics) with variance estimates and CIs.

A forest whose trees are each grown on ``k`` rows drawn *with* replacement from the ``n`` training
rows is a V-statistic; it is asymptotically normal, so a variance estimate gives a confidence
interval for the expected forest prediction (Zhou, Mentch & Hooker, JMLR 22(287), 2021).

Four sampling-variance estimators are available, each a pure function of the tree predictions
and the subsample design (:mod:`winnow.explain.forest_variance`, re-exported here), chosen by
the ``variance`` parameter:

- ``"ij_v"``: the infinitesimal jackknife with the Monte-Carlo bias correction of Wager, Hastie
  & Efron (2014), computed from sparse in-bag counts;
- ``"ij_v_calibrated"`` (the default): the same, with each point's estimate replaced by its
  empirical-Bayes posterior mean over the batch (:mod:`winnow.explain.forest_calibration`);
- ``"internal"``: the grouped design of Mentch & Hooker (2016);
- ``"internal_corrected"``: the same with the within-group Monte-Carlo noise removed from zeta_1.

The variance due to a finite number of trees, ``Var_b(t_b) / B``, is reported separately as
``monte_carlo``; intervals use the sum of both parts.

>>> from sklearn.datasets import make_friedman1
>>> X, y = make_friedman1(n_samples=200, noise=1.0, random_state=0)
>>> forest = VForestRegressor(n_estimators=200, subsample_size=20, random_state=0).fit(X, y)
>>> forest.predict_interval(X[:3]).shape
(3, 2)
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.stats import norm
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from winnow.explain.exceptions import ExplainInputError
from winnow.explain.forest_calibration import MIN_CALIBRATION_POINTS, calibrate_variances
from winnow.explain.forest_variance import (
    CHUNK_ELEMENTS,
    GROUPED_VARIANCES,
    SAMPLING_VARIANCE,
    ForestVariance,
    SubsampleDesign,
    chunks,
    draw_subsamples,
    ij_v_half_variance,
    ij_v_variance,
    internal_corrected_variance,
    internal_variance,
    monte_carlo_variance,
)

__all__ = [
    "ForestVariance",
    "SubsampleDesign",
    "VForestClassifier",
    "VForestRegressor",
    "draw_subsamples",
    "ij_v_variance",
    "internal_corrected_variance",
    "internal_variance",
    "monte_carlo_variance",
]

_MAX_SEED = np.iinfo(np.int32).max


def _fit_tree(tree_class, params: dict, X, y, inbag: sp.csr_matrix, b: int, seed: int, validate):
    # Fitting on the in-bag rows only (not all rows with zero weights) keeps each fit O(k) and
    # makes min_samples_leaf count rows that are really in the subsample. All trees share their
    # parameters, so they are validated with the first tree only (a third of a small tree's fit).
    span = slice(inbag.indptr[b], inbag.indptr[b + 1])
    rows, weights = inbag.indices[span], inbag.data[span].astype(np.float64)
    tree = tree_class(**params, random_state=seed)
    with config_context(skip_parameter_validation=not validate):
        return tree.fit(X[rows], y[rows], sample_weight=weights, check_input=False)


def _invalid(name: str, allowed: str, value, fix: str) -> ExplainInputError:
    return ExplainInputError(f"{name} must be {allowed}; got {value!r}. Fix: {fix}")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


class _BaseVForest(BaseEstimator):
    """Shared fitting, validation and variance code; subclasses say how a tree predicts."""

    _tree_class: type

    def __init__(
        self,
        n_estimators: int = 500,
        subsample_size: int | float | None = None,
        replace: bool = True,
        variance: str = "ij_v_calibrated",
        n_groups: int | None = None,
        max_features: int | float | str | None = 1.0,
        max_depth: int | None = None,
        min_samples_leaf: int | float = 1,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.n_estimators = n_estimators
        self.subsample_size = subsample_size
        self.replace = replace
        self.variance = variance
        self.n_groups = n_groups
        self.max_features = max_features
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        if not _is_int(self.n_estimators) or self.n_estimators < 1:
            raise _invalid("n_estimators", "an int >= 1", self.n_estimators, "e.g. 500")
        if self.variance not in SAMPLING_VARIANCE:
            raise _invalid(
                "variance",
                f"one of {sorted(SAMPLING_VARIANCE)}",
                self.variance,
                "use variance='ij_v_calibrated' (the default) unless you want the grouped design",
            )
        if not isinstance(self.replace, bool | np.bool_):
            raise _invalid("replace", "True or False", self.replace, "replace=True")
        size = self.subsample_size
        is_fraction = isinstance(size, Real) and not isinstance(size, bool) and 0 < size <= 1
        if size is not None and not ((_is_int(size) and size >= 1) or is_fraction):
            raise _invalid(
                "subsample_size",
                "None, an int >= 1 (rows) or a float in (0, 1] (fraction of rows)",
                size,
                "e.g. subsample_size=0.1",
            )
        if self.variance in GROUPED_VARIANCES:
            limit = self.n_estimators // 2
            if limit < 2:
                raise _invalid(
                    "n_estimators",
                    f"at least 4 with variance={self.variance!r} (2 groups of 2 trees)",
                    self.n_estimators,
                    "raise n_estimators",
                )
            groups = self.n_groups
            if groups is not None and not (_is_int(groups) and 2 <= groups <= limit):
                raise _invalid(
                    "n_groups",
                    f"None or an int in [2, n_estimators // 2 = {limit}] (each group needs at "
                    "least 2 trees)",
                    groups,
                    "leave n_groups=None for round(sqrt(n_estimators)), or raise n_estimators",
                )

    def _resolve_subsample_size(self, n_train: int) -> int:
        size = self.subsample_size
        if size is None:
            k = max(2, math.ceil(n_train / 10))
            k = k if self.replace else min(k, n_train)
        elif _is_int(size):
            k = int(size)
        else:
            k = max(1, math.ceil(float(size) * n_train))
        if not self.replace and k > n_train:
            raise ExplainInputError(
                f"subsample_size={size!r} asks for {k} rows without replacement, but the "
                f"training set has only n={n_train} rows. Fix: pass subsample_size <= {n_train} "
                "(or a fraction in (0, 1]), or set replace=True"
            )
        if not self.replace and k == n_train and self.variance.startswith("ij_v"):
            raise ExplainInputError(
                f"subsample_size={size!r} gives k=n={n_train} rows without replacement, so every "
                "tree sees the same data and the ij_v variance is undefined. Fix: pass "
                f"subsample_size < {n_train}, or set replace=True"
            )
        return k

    def _resolve_n_groups(self) -> int | None:
        if self.variance not in GROUPED_VARIANCES:
            return None
        if self.n_groups is not None:
            return int(self.n_groups)
        return min(max(2, round(math.sqrt(self.n_estimators))), self.n_estimators // 2)

    def _fit_forest(self, X: np.ndarray, y: np.ndarray) -> None:
        n_train = X.shape[0]
        self.subsample_size_ = self._resolve_subsample_size(n_train)
        self.n_groups_ = self._resolve_n_groups()
        n_trees = self.n_estimators
        if self.n_groups_ is not None:
            n_trees = self.n_groups_ * (self.n_estimators // self.n_groups_)
        rng = check_random_state(self.random_state)
        design = draw_subsamples(
            n_train, self.subsample_size_, n_trees, bool(self.replace), self.n_groups_, rng
        )
        seeds = rng.randint(_MAX_SEED, size=n_trees)
        params = {
            "max_features": self.max_features,
            "max_depth": self.max_depth,
            "min_samples_leaf": self.min_samples_leaf,
        }
        inbag = design.inbag
        first = _fit_tree(self._tree_class, params, X, y, inbag, 0, seeds[0], validate=True)
        rest = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(_fit_tree)(self._tree_class, params, X, y, inbag, b, seeds[b], validate=False)
            for b in range(1, n_trees)
        )
        self.estimators_ = [first, *rest]
        self.inbag_ = inbag
        self.tree_groups_ = design.groups

    def _tree_outputs(self, tree, X: np.ndarray) -> np.ndarray:
        """One tree's outputs ``[m, d]`` at float32 ``X``."""
        raise NotImplementedError

    def _forest_outputs(self, X: np.ndarray) -> np.ndarray:
        """Every tree's outputs ``[B, m, d]``."""
        outputs = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._tree_outputs)(tree, X) for tree in self.estimators_
        )
        return np.stack(outputs)

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float32, reset=False)

    def _mean_outputs(self, X) -> np.ndarray:
        """Forest mean ``[m, d]``, computed in chunks of test points."""
        X = self._validated(X)
        per_row = len(self.estimators_) * self._n_outputs()
        parts = [
            self._forest_outputs(X[rows]).mean(axis=0)
            for rows in chunks(X.shape[0], max(1, CHUNK_ELEMENTS // per_row))
        ]
        return np.concatenate(parts)

    def _variance_outputs(self, X) -> ForestVariance:
        """Mean and variance parts, each ``[m, d]``."""
        X = self._validated(X)
        design = SubsampleDesign(
            self.inbag_, self.subsample_size_, bool(self.replace), self.tree_groups_
        )
        estimate = SAMPLING_VARIANCE[self.variance]
        calibrate = self.variance == "ij_v_calibrated"
        per_row = len(self.estimators_) * self._n_outputs()
        mean, raw, half, monte_carlo = [], [], [], []
        for rows in chunks(X.shape[0], max(1, CHUNK_ELEMENTS // per_row)):
            outputs = self._forest_outputs(X[rows])
            flat = outputs.reshape(outputs.shape[0], -1)
            shape = outputs.shape[1:]
            mean.append(flat.mean(axis=0).reshape(shape))
            raw.append(estimate(flat, design, clip=False).reshape(shape))
            monte_carlo.append(monte_carlo_variance(flat).reshape(shape))
            if calibrate:
                half.append(ij_v_half_variance(flat, design).reshape(shape))
        raw, monte_carlo = np.concatenate(raw), np.concatenate(monte_carlo)
        sampling = np.clip(raw, 0.0, None)
        if calibrate:
            sampling = _calibrated(raw, np.concatenate(half), sampling)
        degenerate = (raw <= 0) & (monte_carlo > 0)
        return ForestVariance(np.concatenate(mean), sampling, monte_carlo, degenerate)

    def _n_outputs(self) -> int:
        return 1


def _calibrated(raw: np.ndarray, half: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """Calibrate each output column over the batch; too small a batch keeps ``clipped``."""
    columns = [calibrate_variances(raw[:, j], half[:, j]) for j in range(raw.shape[1])]
    if any(column is None for column in columns):
        warnings.warn(
            f"variance='ij_v_calibrated' needs at least {MIN_CALIBRATION_POINTS} test points to "
            f"fit its prior, got {raw.shape[0]}; these variances are not calibrated. Fix: "
            "predict the whole test set in one call",
            UserWarning,
            stacklevel=4,
        )
        return clipped
    return np.stack(columns, axis=1)


def _normal_quantile(alpha) -> float:
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise _invalid("alpha", "a float in (0, 1)", alpha, "alpha=0.05 for 95% intervals")
    return float(norm.ppf(1 - alpha / 2))


_PARAMETERS_DOC = """
    Parameters
    ----------
    n_estimators : int, default=500
        Number of trees ``B``. With ``variance="internal*"`` the forest has
        ``n_groups * (n_estimators // n_groups)`` trees so that all groups are equal.
    subsample_size : int, float or None, default=None
        Rows ``k`` per tree: an int, or a float in (0, 1] as a fraction of ``n`` (rounded up).
        None uses ``max(2, ceil(n / 10))``: the V-statistic theory needs ``k`` small against
        ``n``, and ``k / n`` near 0.1 keeps trees deep enough to be accurate while staying in
        the range where the variance estimates were benchmarked.
    replace : bool, default=True
        Draw each subsample with replacement (a V-statistic; counts ~ Multinomial(k, 1/n)) or
        without (a U-statistic; counts in {0, 1}, and ``k <= n`` is required).
    variance : {"ij_v_calibrated", "ij_v", "internal", "internal_corrected"}, \
default="ij_v_calibrated"
        Sampling-variance estimator. ``"ij_v_calibrated"`` shrinks each point's IJ estimate
        toward the batch's empirical-Bayes prior (:mod:`winnow.explain.forest_calibration`);
        it needs 20 or more test points per call, and with fewer it warns and returns the
        ``"ij_v"`` values. It is the default because its intervals cover: 92.9-95.2% for a
        nominal 95% at 500-1,000 trees on Friedman-1, where ``"ij_v"`` gives 89.3-94.9%
        (``benchmarks/results/explain_vforest.json``). The internal ones change how the forest is
        grown: trees come in groups sharing one forced training row (Mentch & Hooker 2016).
    n_groups : int or None, default=None
        Groups for the internal estimators, in ``[2, n_estimators // 2]``; None uses
        ``round(sqrt(n_estimators))``, which balances the number of groups (precision of
        zeta_1) against trees per group (noise in each group mean). Ignored for the IJ ones.
    max_features, max_depth, min_samples_leaf
        Passed to each decision tree; the tree validates them. ``min_samples_leaf`` counts
        distinct in-bag rows, since each tree is fitted on its in-bag rows only, weighted by
        their counts.
    n_jobs : int or None, default=None
        Threads for fitting and predicting, through ``joblib.Parallel(prefer="threads")``, so
        a joblib backend context (Dask, Ray) can scale it out. Results do not depend on it.
    random_state : int, RandomState or None, default=None
        Seeds the subsamples and the trees; every draw is made up front from it.

    Attributes
    ----------
    estimators_ : list of fitted trees, length ``B``.
    inbag_ : scipy.sparse.csr_matrix ``[B, n]`` int32
        In-bag counts; row ``b`` sums to ``subsample_size_`` and stores at most that many entries.
    tree_groups_ : ndarray ``[B]`` int or None
        Group of each tree for the internal estimators, else None.
    subsample_size_ : int
        The resolved ``k``.
    n_groups_ : int or None
        The resolved number of groups (internal estimators), else None.
    n_features_in_ : int
"""


class VForestRegressor(RegressorMixin, _BaseVForest):
    __doc__ = (
        """Regression forest of subsample trees with a sampling-variance estimate per prediction.

    ``predict_interval`` gives a normal interval ``mean +- z * sqrt(sampling + monte_carlo)``
    for the *expected forest prediction* (over training sets and tree randomness), not for the
    true regression function: the forest's bias is not covered.
"""
        + _PARAMETERS_DOC
    )

    _tree_class = DecisionTreeRegressor

    def fit(self, X, y):
        """Grow the forest on ``X [n, p]``, ``y [n]``; returns ``self``."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        self._fit_forest(X, np.ascontiguousarray(y, dtype=np.float64))
        return self

    def _tree_outputs(self, tree, X):
        return tree.predict(X, check_input=False)[:, None]

    def predict(self, X, return_std: bool = False):
        """Forest mean ``[m]``; with ``return_std`` the tuple ``(mean [m], std [m])``.

        ``std = sqrt(sampling + monte_carlo)`` from :meth:`prediction_variance`; the flag
        follows scikit-learn's ``GaussianProcessRegressor.predict``.
        """
        if return_std:
            estimate = self.prediction_variance(X)
            return estimate.mean, estimate.std
        return self._mean_outputs(X)[:, 0]

    def prediction_variance(self, X) -> ForestVariance:
        """Mean and variance parts of the forest prediction at ``X [m, p]``, each ``[m]``."""
        estimate = self._variance_outputs(X)
        return estimate.column(0)

    def predict_interval(self, X, alpha: float = 0.05) -> np.ndarray:
        """Normal ``1 - alpha`` interval for the expected forest prediction: ``[m, 2]`` (lo, hi).

        The interval targets ``E[forest prediction]`` over training sets and trees, not the true
        function ``f(x)``; it is ``mean +- z_{1 - alpha/2} * sqrt(sampling + monte_carlo)``.
        """
        z = _normal_quantile(alpha)
        estimate = self.prediction_variance(X)
        half = z * estimate.std
        return np.stack([estimate.mean - half, estimate.mean + half], axis=-1)


class VForestClassifier(ClassifierMixin, _BaseVForest):
    __doc__ = (
        """Classification forest of subsample trees with a variance for each class probability.

    ``predict_proba`` is the mean of the trees' class probabilities; each class column gets its
    own variance from the chosen estimator, and ``predict_proba_interval`` a normal interval
    clipped to [0, 1] for the *expected* forest probability (not the true probability).
"""
        + _PARAMETERS_DOC
        + """    classes_ : ndarray ``[n_classes]``
        Class labels, sorted, as in scikit-learn (strings allowed).
"""
    )

    _tree_class = DecisionTreeClassifier

    def fit(self, X, y):
        """Grow the forest on ``X [n, p]``, labels ``y [n]``; returns ``self``."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        self._fit_forest(X, encoded.astype(np.float64))
        return self

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _tree_outputs(self, tree, X):
        # A subsample may miss classes: put the tree's columns at its classes' positions.
        proba = np.zeros((X.shape[0], len(self.classes_)))
        proba[:, tree.classes_.astype(np.intp)] = tree.predict_proba(X, check_input=False)
        return proba

    def predict_proba(self, X) -> np.ndarray:
        """Mean of the trees' class probabilities, ``[m, n_classes]``, columns as ``classes_``."""
        return self._mean_outputs(X)

    def predict(self, X) -> np.ndarray:
        """Most probable class label of each row, ``[m]``."""
        best = np.argmax(self.predict_proba(X), axis=1)
        return self.classes_[best]

    def predict_proba_variance(self, X) -> ForestVariance:
        """Mean and variance parts of each class probability, each ``[m, n_classes]``."""
        return self._variance_outputs(X)

    def predict_proba_interval(self, X, alpha: float = 0.05) -> np.ndarray:
        """Normal ``1 - alpha`` intervals for the expected class probabilities.

        Returns ``[m, n_classes, 2]`` (lower, upper), clipped to [0, 1].
        """
        z = _normal_quantile(alpha)
        estimate = self.predict_proba_variance(X)
        half = z * estimate.std
        interval = np.stack([estimate.mean - half, estimate.mean + half], axis=-1)
        return np.clip(interval, 0.0, 1.0)
