"""Figures for the explain capability, drawn with matplotlib's object API (no pyplot state).

Each function takes arrays and returns a :class:`matplotlib.figure.Figure`; saving it is the
caller's job (``RunDir`` or ``fig.savefig``), so the figures work under any backend.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "mark_synthetic",
    "plot_demand_map",
    "plot_effect_curves",
    "plot_explanation",
    "plot_family_shares",
    "plot_forest_ribbon",
    "plot_placebo_shares",
]

CONTEXT_COLORS = {
    "all": "tab:gray",
    "airport": "tab:red",
    "downtown": "tab:blue",
    "neighborhood": "tab:green",
}


def plot_forest_ribbon(
    grid_values: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    feature_name: str,
    truth: np.ndarray | None = None,
    target_name: str = "prediction",
    interval: str = "confidence interval",
) -> Figure:
    """Forest predictions along one feature with their confidence band.

    Args:
        grid_values: ``[g]`` values of the feature, in the order to draw them.
        mean: ``[g]`` forest predictions at the grid points.
        lower, upper: ``[g]`` interval bounds, e.g. the columns of
            ``VForestRegressor.predict_interval``.
        feature_name: label of the x axis.
        truth: optional ``[g]`` true function values, drawn dashed for comparison.
        target_name: what the y values are, on their scale (``"log1p(trips per 1,000)"``):
            a reader must not take a log scale for counts.
        interval: the band's kind and level (``"95% confidence interval"``), on the y axis
            and in the legend.

    Returns:
        A figure with one axes: the ribbon ``[lower, upper]``, the mean line and the truth.
    """
    grid_values = np.asarray(grid_values, dtype=float)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(grid_values, lower, upper, alpha=0.3, label=interval)
    ax.plot(grid_values, mean, linewidth=2, label="forest prediction")
    if truth is not None:
        ax.plot(grid_values, truth, linestyle="--", color="black", label="truth")
    ax.set_xlabel(feature_name)
    ax.set_ylabel(f"{target_name}\n(band: {interval})")
    ax.legend(loc="best")
    return fig


def mark_synthetic(fig: Figure) -> Figure:
    """Title ``fig`` "SYNTHETIC DATA", in red, so that no copy of it passes for a finding."""
    fig.suptitle("SYNTHETIC DATA (made-up trips, not observations)", color="tab:red")
    return fig


def plot_explanation(explanation) -> Figure:
    """Horizontal bars of an S-LIME explanation's weights, largest ``|weight|`` on top.

    ``explanation`` is a :class:`~winnow.explain.slime.SlimeExplanation`. The title gives the
    final sample size and is marked "NOT CONVERGED" (bars hatched) when ``n_max`` stopped the
    sample size from growing.
    """
    pairs = sorted(explanation.as_list(), key=lambda pair: abs(pair[1]))
    names = [name for name, _ in pairs]
    weights = np.array([weight for _, weight in pairs])
    fig = Figure(figsize=(6.0, 0.5 * len(pairs) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    colors = np.where(weights >= 0, "tab:green", "tab:red")
    hatch = None if explanation.converged else "//"
    ax.barh(names, weights, color=colors, hatch=hatch, edgecolor="black", linewidth=0.5)
    ax.axvline(0.0, color="black", linewidth=0.8)
    status = "converged" if explanation.converged else "NOT CONVERGED (n_max reached)"
    ax.set_title(f"S-LIME, n = {explanation.n_samples}, {status}", fontsize=10)
    ax.set_xlabel("weight (per standard deviation of the feature)")
    return fig


def plot_family_shares(
    labels: list[str], families: list[str], point: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> Figure:
    """Grouped bars of each family's importance share per context, with interval whiskers.

    ``point, lower, upper: [len(labels), len(families)]``; ``labels`` name the bar groups
    (e.g. "airport (n=2, pooled model)").
    """
    fig = Figure(figsize=(1.6 * len(labels) + 3.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(families)
    centers = np.arange(len(labels))
    for k, family in enumerate(families):
        x = centers + (k - (len(families) - 1) / 2) * width
        ax.bar(x, point[:, k], width, label=family.replace("_", " "))
        # The interval is drawn on its own: a percentile interval need not contain the point.
        middle, half = (lower[:, k] + upper[:, k]) / 2, (upper[:, k] - lower[:, k]) / 2
        ax.errorbar(x, middle, yerr=half, fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.set_xticks(centers, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("share of mean |SHAP| importance")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_placebo_shares(
    labels: list[str],
    family: str,
    real: np.ndarray,
    real_lower: np.ndarray,
    real_upper: np.ndarray,
    placebo: np.ndarray,
    placebo_lower: np.ndarray,
    placebo_upper: np.ndarray,
) -> Figure:
    """One family's real importance share beside its placebo share, per context.

    All arrays are ``[len(labels)]``: the real share with its bootstrap interval, and the mean
    share over refits with the family shuffled across units with their range. A real bar whose
    point lies inside the grey whisker is no more than the model gives to noise.
    """
    fig = Figure(figsize=(1.4 * len(labels) + 3.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    centers = np.arange(len(labels))
    for offset, values, lower, upper, color, label in (
        (-0.2, real, real_lower, real_upper, "tab:blue", "real"),
        (0.2, placebo, placebo_lower, placebo_upper, "tab:gray", "placebo (shuffled)"),
    ):
        ax.bar(centers + offset, values, 0.4, color=color, label=label)
        middle, half = (lower + upper) / 2, (upper - lower) / 2
        ax.errorbar(centers + offset, middle, yerr=half, fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(centers, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"{family.replace('_', ' ')} share of mean |SHAP|")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_effect_curves(
    feature_names: list[str],
    grids: list[np.ndarray],
    curves: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    ylabel: str,
) -> Figure:
    """One panel per feature; in each, every context's centred curve with its band.

    ``curves[context][i] = (curve, lower, upper)``, each ``[len(grids[i])]``, for
    ``feature_names[i]``. Grid points are quantiles, so the x axis is in feature units and
    points crowd where the data are.
    """
    columns = min(2, len(feature_names))
    rows = -(-len(feature_names) // columns)
    fig = Figure(figsize=(5.0 * columns, 3.4 * rows), layout="constrained")
    for i, name in enumerate(feature_names):
        ax = fig.add_subplot(rows, columns, i + 1)
        for context, per_feature in curves.items():
            curve, lower, upper = per_feature[i]
            color = CONTEXT_COLORS.get(context)
            ax.fill_between(grids[i], lower, upper, color=color, alpha=0.15, linewidth=0)
            ax.plot(grids[i], curve, marker=".", color=color, label=context)
        ax.axhline(0.0, color="black", linewidth=0.6)
        _scale_for_skew(ax, grids[i])
        ax.set_xlabel(name)
        ax.set_ylabel(ylabel)
        if i == 0:
            ax.legend(fontsize=8)
    return fig


def _scale_for_skew(ax, grid: np.ndarray) -> None:
    """A log x axis (symlog when the grid starts at 0) for features spanning decades."""
    positive = grid[grid > 0]
    if grid.min() >= 0 and positive.size > 1 and positive.max() / positive.min() > 50:
        if grid.min() > 0:
            ax.set_xscale("log")
        else:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.set_xlim(left=0)


def plot_demand_map(
    lon: np.ndarray,
    lat: np.ndarray,
    observed: np.ndarray,
    predicted: np.ndarray,
    contexts: np.ndarray,
    target_name: str,
) -> Figure:
    """Observed, predicted and residual demand at unit centroids, side by side.

    Observed and predicted share one colour scale; markers show the context (airport: star,
    downtown: square, neighbourhood: circle).
    """
    fig = Figure(figsize=(13.0, 5.2), layout="constrained")
    low, high = np.nanmin([observed, predicted]), np.nanmax([observed, predicted])
    residual = observed - predicted
    limit = np.nanmax(np.abs(residual))
    panels = [
        ("observed", observed, "viridis", low, high),
        ("predicted (out of fold)", predicted, "viridis", low, high),
        ("observed - predicted", residual, "coolwarm", -limit, limit),
    ]
    markers = {"airport": "*", "downtown": "s", "neighborhood": "o"}
    for k, (title, values, cmap, vmin, vmax) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        for context, marker in markers.items():
            mask = contexts == context
            if mask.any():
                points = ax.scatter(
                    lon[mask],
                    lat[mask],
                    c=values[mask],
                    cmap=cmap,
                    vmin=vmin,
                    vmax=vmax,
                    marker=marker,
                    s=90 if marker == "*" else 30,
                    edgecolors="black",
                    linewidths=0.3,
                    label=context,
                )
        fig.colorbar(points, ax=ax, shrink=0.8, label=target_name if k < 2 else "residual")
        ax.set_title(title, fontsize=10)
        ax.set_aspect(1 / np.cos(np.radians(np.nanmean(lat))))
        ax.set_xlabel("longitude")
        if k == 0:
            ax.set_ylabel("latitude")
            ax.legend(fontsize=7, loc="lower left")
    return fig
