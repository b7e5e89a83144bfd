"""Model-agnostic effect summaries: family importance shares, PD and ALE curves, intervals.

Pure functions of a ``predict`` callable and arrays; the demand pipeline composes them over
contexts and bootstrap replicates. Curves are evaluated on a grid shared by all contexts so that
they can be overlaid and subtracted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "accumulated_local_effects",
    "ale_local_effects",
    "center",
    "curve_difference",
    "data_support",
    "family_shares",
    "ice_curves",
    "percentile_interval",
    "permutation_p_value",
    "quantile_bins",
    "shared_grid",
    "shuffle_columns",
]

Predict = Callable[[np.ndarray], np.ndarray]


def family_shares(shap_values: np.ndarray, families: Mapping[str, Sequence[int]]) -> dict:
    """Each family's share of the total mean |SHAP| importance; the shares sum to one.

    A family's importance is the sum of its features' mean absolute SHAP values (the usual
    "relative importance" of a group in the SHAP literature), so ``shap_values: [n, p]`` and
    ``families`` maps a family name to column indices that partition (a subset of) ``range(p)``.
    """
    importance = np.abs(np.asarray(shap_values, dtype=float)).mean(axis=0)
    totals = {name: float(importance[list(columns)].sum()) for name, columns in families.items()}
    grand = sum(totals.values())
    if grand == 0:
        return {name: 1.0 / len(totals) for name in totals}
    return {name: value / grand for name, value in totals.items()}


def shared_grid(values: np.ndarray, points: int) -> np.ndarray:
    """Distinct quantiles of ``values`` (NaN ignored) at ``points`` equally spaced levels 0..1.

    Equal-frequency points keep a skewed feature's curve where the data are, and serve as the
    bin edges of ALE.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("a feature has no finite values; it cannot have an effect curve")
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, points)))


def ice_curves(predict: Predict, X: np.ndarray, column: int, grid: np.ndarray) -> np.ndarray:
    """Individual conditional expectation: row i's prediction with ``column`` set to each grid
    value, ``[n, len(grid)]``. Their mean over a set of rows is that set's partial dependence
    (the numbers of ``sklearn.inspection.partial_dependence(method="brute")``); one batched
    ``predict`` call on ``[n * len(grid), p]`` serves every subset of rows.
    """
    n = len(X)
    stacked = np.tile(X, (len(grid), 1))
    stacked[:, column] = np.repeat(grid, n)
    return np.asarray(predict(stacked), dtype=float).reshape(len(grid), n).T


def ale_local_effects(predict: Predict, X: np.ndarray, column: int, edges: np.ndarray):
    """Each row's ALE bin and local effect, for :func:`accumulated_local_effects`.

    Rows fall in bins ``(edges[k], edges[k+1]]`` (the first bin also takes ``edges[0]``); a
    row's local effect is ``f(x with column = upper edge) - f(x with column = lower edge)``.
    Rows outside ``[edges[0], edges[-1]]`` or with NaN in the column get bin ``-1``.
    Returns ``(bins: [n] int, effects: [n] float)``.
    """
    values = X[:, column]
    inside = np.isfinite(values) & (values >= edges[0]) & (values <= edges[-1])
    bins = np.full(len(X), -1)
    effects = np.zeros(len(X))
    if not inside.any():
        return bins, effects
    bins[inside] = np.clip(np.searchsorted(edges, values[inside]) - 1, 0, len(edges) - 2)
    lower, upper = X[inside].copy(), X[inside].copy()
    lower[:, column] = edges[bins[inside]]
    upper[:, column] = edges[bins[inside] + 1]
    effects[inside] = np.asarray(predict(upper), dtype=float) - np.asarray(predict(lower))
    return bins, effects


def accumulated_local_effects(bins: np.ndarray, effects: np.ndarray, n_edges: int) -> np.ndarray:
    """First-order ALE (Apley and Zhu 2020) at the ``n_edges`` bin edges, centred.

    ``bins, effects`` come from :func:`ale_local_effects` (a subset of its rows gives that
    subset's ALE). A bin's effect is the mean local effect of its rows; an empty bin adds no
    change. The accumulated curve is centred so that its mean over the rows used is zero.
    Returns ``[n_edges]``; zeros when no row falls in a bin.
    """
    used = bins >= 0
    if not used.any():
        return np.zeros(n_edges)
    counts = np.bincount(bins[used], minlength=n_edges - 1)
    sums = np.bincount(bins[used], weights=effects[used], minlength=n_edges - 1)
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    accumulated = np.concatenate([[0.0], np.cumsum(means)])
    midpoints = (accumulated[:-1] + accumulated[1:]) / 2
    return accumulated - (counts * midpoints).sum() / counts.sum()


def center(curves: np.ndarray) -> np.ndarray:
    """Curves ``[..., G]`` minus their mean over the grid: shapes, not levels, compared."""
    return curves - curves.mean(axis=-1, keepdims=True)


def percentile_interval(samples: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval over axis 0 at level ``1 - alpha``."""
    lower, upper = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return lower, upper


def shuffle_columns(
    X: np.ndarray,
    columns: Sequence[int],
    rng: np.random.Generator,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``X: [n, p]`` whose ``columns`` are permuted across rows, jointly.

    The placebo of a feature family: its values keep their distribution and their relations to
    each other (a unit's miles and fare move together) but lose any relation to the unit, so
    whatever importance a model still gives them is what it gives to noise. With ``strata:
    [n]`` rows trade values only within their stratum, which keeps what the strata explain.
    """
    shuffled = np.array(X, dtype=float, copy=True)
    columns = list(columns)
    order = np.arange(len(shuffled))
    groups = [order] if strata is None else [order[strata == s] for s in np.unique(strata)]
    for rows in groups:
        shuffled[np.ix_(rows, columns)] = X[np.ix_(rng.permutation(rows), columns)]
    return shuffled


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """``[n]`` int labels of equal-frequency bins of ``values`` (tied values share a bin)."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def permutation_p_value(observed: float, placebo: np.ndarray) -> float:
    """One-sided permutation p-value ``(1 + #{placebo >= observed}) / (1 + len(placebo))``."""
    placebo = np.asarray(placebo, dtype=float)
    return float((1 + np.sum(placebo >= observed)) / (1 + placebo.size))


def data_support(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Grid points within ``[min, max]`` of the finite ``values``: where ALE is informed."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(len(grid), dtype=bool)
    return (grid >= finite.min()) & (grid <= finite.max())


def curve_difference(
    boot_a: np.ndarray, boot_b: np.ndarray, alpha: float, support: np.ndarray | None = None
) -> dict:
    """Where two contexts' centred curves differ beyond their bootstrap interval.

    ``boot_a, boot_b: [B, G]`` are curves of bootstrap replicates paired by index. Only the
    grid points in ``support: [G] bool`` (default all) are compared, and each curve is centred
    over them. Returns the share of compared points whose ``1 - alpha`` interval of the
    difference excludes zero (NaN when fewer than two points are compared), the largest absolute
    mean difference, the number of points compared and ``differs: [G] bool``.
    """
    support = np.ones(boot_a.shape[1], dtype=bool) if support is None else support
    differs = np.zeros(boot_a.shape[1], dtype=bool)
    if support.sum() < 2:
        return {
            "share_of_grid_differing": float("nan"),
            "max_abs_difference": float("nan"),
            "points_compared": int(support.sum()),
            "differs": differs,
        }
    difference = center(boot_a[:, support]) - center(boot_b[:, support])
    lower, upper = percentile_interval(difference, alpha)
    differs[support] = (lower > 0) | (upper < 0)
    return {
        "share_of_grid_differing": float(differs[support].mean()),
        "max_abs_difference": float(np.abs(difference.mean(axis=0)).max()),
        "points_compared": int(support.sum()),
        "differs": differs,
    }
