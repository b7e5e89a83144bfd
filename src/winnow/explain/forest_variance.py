"""Sampling variance of a subsampled forest's prediction, from its tree predictions and design.

Pure functions of ``predictions`` (``[n_trees, n_points]``) and the :class:`SubsampleDesign`
(which rows each tree saw), used by :mod:`winnow.explain.vforest`:

- :func:`ij_v_variance`: the infinitesimal jackknife with the Monte-Carlo bias correction of
  Wager, Hastie & Efron (2014), from sparse in-bag counts (and :func:`ij_v_half_variance`, the
  same from half of the trees, which ``"ij_v_calibrated"`` needs);
- :func:`internal_variance`: the grouped design of Mentch & Hooker (2016);
- :func:`internal_corrected_variance`: the same with the within-group Monte-Carlo noise removed;
- :func:`monte_carlo_variance`: the variance due to a finite number of trees, ``Var_b / B``.

:func:`draw_subsamples` draws the design (with or without replacement, grouped or not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.utils.random import sample_without_replacement

from winnow.explain.exceptions import ExplainInputError

__all__ = [
    "CHUNK_ELEMENTS",
    "GROUPED_VARIANCES",
    "SAMPLING_VARIANCE",
    "ForestVariance",
    "SubsampleDesign",
    "chunks",
    "draw_subsamples",
    "ij_v_half_variance",
    "ij_v_variance",
    "internal_corrected_variance",
    "internal_variance",
    "monte_carlo_variance",
]

# Dense intermediates ([n_train, chunk] for the IJ, [n_trees, chunk] for tree predictions) are
# kept under this many float64 entries (32 MiB), so memory stays bounded for any test-set size.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ForestVariance:
    """Forest prediction and the two parts of its variance at each test point.

    Shape:
        ``mean``, ``sampling``, ``monte_carlo``: ``[m]`` for a regressor, ``[m, n_classes]`` for
        a classifier's class probabilities.

    ``sampling`` estimates the variance of the infinite-tree forest over training sets;
    ``monte_carlo`` is ``Var_b(t_b) / B``, the extra variance of a forest of ``B`` trees.
    ``degenerate`` (bool, same shape) marks points where the trees disagree but the sampling
    estimate came out at or below zero (and was clipped): there the interval rests on the
    Monte-Carlo part alone and is too narrow. More trees (or ``variance="ij_v_calibrated"``)
    fix it.
    """

    mean: np.ndarray
    sampling: np.ndarray
    monte_carlo: np.ndarray
    degenerate: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """Variance of the ``B``-tree forest prediction: ``sampling + monte_carlo``."""
        return self.sampling + self.monte_carlo

    @property
    def std(self) -> np.ndarray:
        """``sqrt(total)``, the standard error used by the intervals."""
        return np.sqrt(self.total)

    def column(self, j: int) -> ForestVariance:
        """Output ``j`` of ``[m, d]`` parts as ``[m]`` parts."""
        return ForestVariance(
            self.mean[:, j], self.sampling[:, j], self.monte_carlo[:, j], self.degenerate[:, j]
        )


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
    predictions: np.ndarray,
    design: SubsampleDesign,
    chunk_elements: int = CHUNK_ELEMENTS,
    clip: bool = True,
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
    the corrected value can be negative; it is clipped at 0 unless ``clip`` is false.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the subsample design; uses ``inbag`` and ``replace``.
        chunk_elements: bound on the entries of the dense ``[n, chunk]`` intermediate.
        clip: clip negative estimates at 0.

    Returns:
        ``[m]`` sampling variances.
    """
    corrected = _ij_v_corrected(predictions, design.inbag, design, chunk_elements)
    return np.clip(corrected, 0.0, None) if clip else corrected


def ij_v_half_variance(
    predictions: np.ndarray, design: SubsampleDesign, chunk_elements: int = CHUNK_ELEMENTS
) -> np.ndarray:
    """:func:`ij_v_variance` (unclipped) from the even-numbered half of the trees, ``[m]``.

    The trees are i.i.d., so a fixed half is a random half; the calibration of
    :mod:`winnow.explain.forest_calibration` reads the Monte-Carlo noise from its difference
    with the full-forest estimate.
    """
    return _ij_v_corrected(predictions[::2], design.inbag[::2], design, chunk_elements)


def _ij_v_corrected(
    predictions: np.ndarray, inbag: sp.spmatrix, design: SubsampleDesign, chunk_elements: int
) -> np.ndarray:
    n_trees, n_points = predictions.shape
    inbag = sp.csr_matrix(inbag, dtype=np.float64)
    n_train = inbag.shape[1]
    count_mean = np.asarray(inbag.sum(axis=0)).ravel() / n_trees
    count_sq_mean = np.asarray(inbag.multiply(inbag).sum(axis=0)).ravel() / n_trees
    total_count_var = float(np.sum(count_sq_mean - count_mean**2))

    centered = predictions - predictions.mean(axis=0)
    inbag_t = inbag.T.tocsr()
    raw = np.empty(n_points)
    for cols in chunks(n_points, max(1, chunk_elements // max(n_train, 1))):
        cov = inbag_t @ centered[:, cols] / n_trees
        raw[cols] = np.einsum("ij,ij->j", cov, cov)
    corrected = raw - total_count_var * centered.var(axis=0) / n_trees
    if not design.replace:
        corrected *= (n_train / (n_train - design.subsample_size)) ** 2
    return corrected


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


def internal_variance(
    predictions: np.ndarray, design: SubsampleDesign, clip: bool = True
) -> np.ndarray:
    """Mentch-Hooker internal estimate of the sampling variance from the grouped design.

    Every tree of group ``g`` shares one forced training row. With ``G`` groups of ``t`` trees,
    sample variances (``ddof=1``) over groups and ``k`` the subsample size::

        zeta_1 = Var_g(mean of group g's predictions)
        V      = (k^2 / n) * zeta_1

    The full Mentch-Hooker variance adds ``zeta_k / B``, which is ``monte_carlo`` here.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the grouped subsample design (``groups`` set, equal group sizes).
        clip: accepted so every estimator has one signature; a variance is never negative.

    Returns:
        ``[m]`` sampling variances.
    """
    group_means = _grouped(predictions, design).mean(axis=1)
    zeta_1 = group_means.var(axis=0, ddof=1)
    return design.subsample_size**2 / design.n_train * zeta_1


def internal_corrected_variance(
    predictions: np.ndarray, design: SubsampleDesign, clip: bool = True
) -> np.ndarray:
    """:func:`internal_variance` with ``zeta_1`` freed of the within-group Monte-Carlo noise.

    A group mean of ``t`` trees varies by ``zeta_1`` plus its own Monte-Carlo noise, so::

        zeta_1 = Var_g(group means) - mean_g Var_within(g) / t     (clipped at 0 if ``clip``)
        V      = (k^2 / n) * zeta_1

    with sample variances (``ddof=1``), which makes the subtraction unbiased.

    Args:
        predictions: ``[B, m]`` tree predictions.
        design: the grouped subsample design (``groups`` set, equal group sizes).
        clip: clip a negative ``zeta_1`` at 0.

    Returns:
        ``[m]`` sampling variances.
    """
    grouped = _grouped(predictions, design)
    trees_per_group = grouped.shape[1]
    between = grouped.mean(axis=1).var(axis=0, ddof=1)
    within = grouped.var(axis=1, ddof=1).mean(axis=0)
    zeta_1 = between - within / trees_per_group
    zeta_1 = np.clip(zeta_1, 0.0, None) if clip else zeta_1
    return design.subsample_size**2 / design.n_train * zeta_1


SAMPLING_VARIANCE: dict[str, Callable[..., np.ndarray]] = {
    "ij_v": ij_v_variance,
    "ij_v_calibrated": ij_v_variance,
    "internal": internal_variance,
    "internal_corrected": internal_corrected_variance,
}
GROUPED_VARIANCES = frozenset({"internal", "internal_corrected"})


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


def chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
