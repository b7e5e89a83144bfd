"""Random forests of with-replacement subsamples (V-statistics) with variance estimates and CIs.

A forest whose trees are each grown on ``k`` rows drawn *with* replacement from the ``n`` training
rows is a V-statistic; it is asymptotically normal, so a variance estimate gives a confidence
interval for the expected forest prediction (Zhou, Mentch & Hooker, JMLR 22(287), 2021).

Three sampling-variance estimators are available, each a pure function of the tree predictions
and the subsample design, chosen by the ``variance`` parameter:

- ``"ij_v"``: the infinitesimal jackknife with the Monte-Carlo bias correction of Wager, Hastie
  & Efron (2014), computed from sparse in-bag counts;
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from sklearn.utils.random import sample_without_replacement
from sklearn.utils.validation import check_is_fitted, validate_data

from winnow.explain.exceptions import ExplainInputError

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

# Dense intermediates ([n_train, chunk] for the IJ, [n_trees, chunk] for tree predictions) are
# kept under this many float64 entries (32 MiB), so memory stays bounded for any test-set size.
_CHUNK_ELEMENTS = 1 << 22
_MAX_SEED = np.iinfo(np.int32).max


@dataclass(frozen=True)
class ForestVariance:
    """Forest prediction and the two parts of its variance at each test point.

    Shape:
        ``mean``, ``sampling``, ``monte_carlo``: ``[m]`` for a regressor, ``[m, n_classes]`` for
        a classifier's class probabilities.

    ``sampling`` estimates the variance of the infinite-tree forest over training sets;
    ``monte_carlo`` is ``Var_b(t_b) / B``, the extra variance of a forest of ``B`` trees.
    """

    mean: np.ndarray
    sampling: np.ndarray
    monte_carlo: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """Variance of the ``B``-tree forest prediction: ``sampling + monte_carlo``."""
        return self.sampling + self.monte_carlo

    @property
    def std(self) -> np.ndarray:
        """``sqrt(total)``, the standard error used by the intervals."""
        return np.sqrt(self.total)


@dataclass(frozen=True)
class SubsampleDesign:
    """How the trees' training subsamples were drawn; the input of every variance estimator.

    Shape:
        ``inbag``: ``[B, n]`` sparse int, ``inbag[b, i]`` = times row ``i`` is in tree ``b``'s
        subsample (each row of ``inbag`` sums to ``subsample_size``).
        ``groups``: ``[B]`` int group id of each tree for the grouped (internal) design, else None.
    """

    inbag: sp.csr_matrix
    subsample_size: int
    replace: bool
    groups: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        return self.inbag.shape[1]


def monte_carlo_variance(predictions: np.ndarray) -> np.ndarray:
    """Variance of a ``B``-tree average around the infinite-tree forest: ``Var_b(t_b) / B``.

    Args:
        predictions: ``[B, m]`` tree predictions at ``m`` test points.

    Returns:
        ``[m]``, with the plug-in variance ``(1/B) sum_b (t_b - t_bar)^2`` as in Wager et al.
    """
    return predictions.var(axis=0) / predictions.shape[0]


def ij_v_variance(
    predictions: np.ndarray, design: SubsampleDesign, chunk_elements: int = _CHUNK_ELEMENTS
) -> np.ndarray:
    """Bias-corrected infinitesimal-jackknife sampling variance of the forest prediction.

    With tree predictions ``T [B, m]`` and in-bag counts ``N [B, n]``, all moments over trees ``b``
    with the ``1/B`` normalisation::

        V_raw(x) = sum_i Cov_b(N_ib, t_b(x))^2
        V(x)     = V_raw(x) - sum_i Var_b(N_ib) * Var_b(t_b(x)) / B

    The subtracted term is the expected value of ``V_raw`` when the tree predictions carry no
    information about the counts (the Monte-Carlo bias of Wager et al. 2014, as in forestci).
    ``Cov_b(N_i, t) = (1/B) sum_b N_ib (t_b - t_bar)`` is computed as the sparse product
    ``N^T (T - t_bar)`` in chunks of test points. For ``replace=False`` the result is multiplied
    by ``(n / (n - k))^2``, the finite-population factor of Wager & Athey (2018). With few trees
    the corrected value can be negative; it is clipped at 0.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the subsample design; uses ``inbag`` and ``replace``.
        chunk_elements: bound on the entries of the dense ``[n, chunk]`` intermediate.

    Returns:
        ``[m]`` non-negative sampling variances.
    """
    n_trees, n_points = predictions.shape
    inbag = sp.csr_matrix(design.inbag, dtype=np.float64)
    n_train = inbag.shape[1]
    count_mean = np.asarray(inbag.sum(axis=0)).ravel() / n_trees
    count_sq_mean = np.asarray(inbag.multiply(inbag).sum(axis=0)).ravel() / n_trees
    total_count_var = float(np.sum(count_sq_mean - count_mean**2))

    centered = predictions - predictions.mean(axis=0)
    inbag_t = inbag.T.tocsr()
    raw = np.empty(n_points)
    for cols in _chunks(n_points, max(1, chunk_elements // max(n_train, 1))):
        cov = inbag_t @ centered[:, cols] / n_trees
        raw[cols] = np.einsum("ij,ij->j", cov, cov)
    corrected = raw - total_count_var * centered.var(axis=0) / n_trees
    if not design.replace:
        corrected *= (n_train / (n_train - design.subsample_size)) ** 2
    return np.clip(corrected, 0.0, None)


def _grouped(predictions: np.ndarray, design: SubsampleDesign) -> np.ndarray:
    """Tree predictions ``[B, m]`` -> ``[n_groups, trees_per_group, m]``; groups must be equal."""
    if design.groups is None:
        raise ExplainInputError(
            "the internal variance estimators need a grouped design (SubsampleDesign.groups), "
            "got groups=None; fit the forest with variance='internal' or 'internal_corrected'"
        )
    labels, sizes = np.unique(design.groups, return_counts=True)
    if sizes.min() != sizes.max() or sizes[0] < 2:
        raise ExplainInputError(
            f"the internal variance estimators need equal groups of at least 2 trees, got group "
            f"sizes from {sizes.min()} to {sizes.max()}; draw the design with draw_subsamples"
        )
    order = np.argsort(design.groups, kind="stable")
    return predictions[order].reshape(len(labels), sizes[0], predictions.shape[1])


def internal_variance(predictions: np.ndarray, design: SubsampleDesign) -> np.ndarray:
    """Mentch-Hooker internal estimate of the sampling variance from the grouped design.

    Every tree of group ``g`` shares one forced training row. With ``G`` groups of ``t`` trees,
    sample variances (``ddof=1``) over groups and ``k`` the subsample size::

        zeta_1 = Var_g(mean of group g's predictions)
        V      = (k^2 / n) * zeta_1

    The full Mentch-Hooker variance adds ``zeta_k / B``, which is ``monte_carlo`` here.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the grouped subsample design (``groups`` set, equal group sizes).

    Returns:
        ``[m]`` sampling variances.
    """
    group_means = _grouped(predictions, design).mean(axis=1)
    zeta_1 = group_means.var(axis=0, ddof=1)
    return design.subsample_size**2 / design.n_train * zeta_1


def internal_corrected_variance(predictions: np.ndarray, design: SubsampleDesign) -> np.ndarray:
    """:func:`internal_variance` with ``zeta_1`` freed of the within-group Monte-Carlo noise.

    A group mean of ``t`` trees varies by ``zeta_1`` plus its own Monte-Carlo noise, so::

        zeta_1 = max(Var_g(group means) - mean_g Var_within(g) / t, 0)
        V      = (k^2 / n) * zeta_1

    with sample variances (``ddof=1``), which makes the subtraction unbiased.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the grouped subsample design (``groups`` set, equal group sizes).

    Returns:
        ``[m]`` non-negative sampling variances.
    """
    grouped = _grouped(predictions, design)
    trees_per_group = grouped.shape[1]
    between = grouped.mean(axis=1).var(axis=0, ddof=1)
    within = grouped.var(axis=1, ddof=1).mean(axis=0)
    zeta_1 = np.clip(between - within / trees_per_group, 0.0, None)
    return design.subsample_size**2 / design.n_train * zeta_1


_SAMPLING_VARIANCE: dict[str, Callable[[np.ndarray, SubsampleDesign], np.ndarray]] = {
    "ij_v": ij_v_variance,
    "internal": internal_variance,
    "internal_corrected": internal_corrected_variance,
}
_GROUPED = frozenset({"internal", "internal_corrected"})


def draw_subsamples(
    n_train: int,
    subsample_size: int,
    n_trees: int,
    replace: bool,
    n_groups: int | None,
    random_state: np.random.RandomState,
) -> SubsampleDesign:
    """Draw every tree's subsample up front, so the forest does not depend on ``n_jobs``.

    Without groups each tree draws ``k`` rows (with or without replacement). With ``n_groups``,
    tree ``b`` belongs to group ``b // (n_trees // n_groups)``; all trees of a group share one
    forced row, drawn once per group, and draw the other ``k - 1`` rows as usual (without
    replacement: from the rows other than the forced one).

    Returns:
        A design whose ``inbag`` is ``[n_trees, n_train]`` CSR int32 with ``k`` per row, sorted
        column indices, and at most ``k`` stored entries per row.
    """
    if n_groups is None:
        groups, forced = None, None
    elif n_trees % n_groups or n_trees < 2 * n_groups:
        raise ExplainInputError(
            f"n_trees={n_trees} must be a multiple of n_groups={n_groups} with at least 2 trees "
            "per group; pass n_groups * (n_trees // n_groups) trees"
        )
    else:
        groups = np.arange(n_trees) // (n_trees // n_groups)
        forced = random_state.randint(n_train, size=n_groups)
    indptr, indices, counts = [0], [], []
    for b in range(n_trees):
        if forced is None:
            rows = _draw_rows(n_train, subsample_size, replace, random_state)
        else:
            fixed = forced[groups[b]]
            rest = _draw_rows(n_train - (not replace), subsample_size - 1, replace, random_state)
            if not replace:
                rest = rest + (rest >= fixed)
            rows = np.append(rest, fixed)
        unique, count = np.unique(rows, return_counts=True)
        indices.append(unique)
        counts.append(count)
        indptr.append(indptr[-1] + len(unique))
    inbag = sp.csr_matrix(
        (
            np.concatenate(counts).astype(np.int32),
            np.concatenate(indices).astype(np.int32),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(n_trees, n_train),
    )
    return SubsampleDesign(inbag, subsample_size, replace, groups)


def _draw_rows(n: int, k: int, replace: bool, rng: np.random.RandomState) -> np.ndarray:
    if replace:
        return rng.randint(n, size=k)
    return sample_without_replacement(n, k, random_state=rng)


def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


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
        variance: str = "ij_v",
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
        if self.variance not in _SAMPLING_VARIANCE:
            raise _invalid(
                "variance",
                f"one of {sorted(_SAMPLING_VARIANCE)}",
                self.variance,
                "use variance='ij_v' (the default) unless you want the grouped design",
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
        if self.variance in _GROUPED:
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
        if not self.replace and k == n_train and self.variance == "ij_v":
            raise ExplainInputError(
                f"subsample_size={size!r} gives k=n={n_train} rows without replacement, so every "
                "tree sees the same data and the ij_v variance is undefined. Fix: pass "
                f"subsample_size < {n_train}, or set replace=True"
            )
        return k

    def _resolve_n_groups(self) -> int | None:
        if self.variance not in _GROUPED:
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
            for rows in _chunks(X.shape[0], max(1, _CHUNK_ELEMENTS // per_row))
        ]
        return np.concatenate(parts)

    def _variance_outputs(self, X) -> ForestVariance:
        """Mean and variance parts, each ``[m, d]``."""
        X = self._validated(X)
        design = SubsampleDesign(
            self.inbag_, self.subsample_size_, bool(self.replace), self.tree_groups_
        )
        estimate = _SAMPLING_VARIANCE[self.variance]
        per_row = len(self.estimators_) * self._n_outputs()
        mean, sampling, monte_carlo = [], [], []
        for rows in _chunks(X.shape[0], max(1, _CHUNK_ELEMENTS // per_row)):
            outputs = self._forest_outputs(X[rows])
            flat = outputs.reshape(outputs.shape[0], -1)
            shape = outputs.shape[1:]
            mean.append(flat.mean(axis=0).reshape(shape))
            sampling.append(estimate(flat, design).reshape(shape))
            monte_carlo.append(monte_carlo_variance(flat).reshape(shape))
        return ForestVariance(
            np.concatenate(mean), np.concatenate(sampling), np.concatenate(monte_carlo)
        )

    def _n_outputs(self) -> int:
        return 1


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
    variance : {"ij_v", "internal", "internal_corrected"}, default="ij_v"
        Sampling-variance estimator. The internal ones change how the forest is grown: trees
        come in groups sharing one forced training row (Mentch & Hooker 2016).
    n_groups : int or None, default=None
        Groups for the internal estimators, in ``[2, n_estimators // 2]``; None uses
        ``round(sqrt(n_estimators))``, which balances the number of groups (precision of
        zeta_1) against trees per group (noise in each group mean). Ignored for ``"ij_v"``.
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
        return ForestVariance(
            estimate.mean[:, 0], estimate.sampling[:, 0], estimate.monte_carlo[:, 0]
        )

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
