"""Figures for the explain capability, drawn with matplotlib's object API (no pyplot state).

Each function takes arrays and returns a :class:`matplotlib.figure.Figure`; saving it is the
caller's job (``RunDir`` or ``fig.savefig``), so the figures work under any backend.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_explanation", "plot_forest_ribbon"]


def plot_forest_ribbon(
    grid_values: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    feature_name: str,
    truth: np.ndarray | None = None,
) -> Figure:
    """Forest predictions along one feature with their confidence band.

    Args:
        grid_values: ``[g]`` values of the feature, in the order to draw them.
        mean: ``[g]`` forest predictions at the grid points.
        lower, upper: ``[g]`` interval bounds, e.g. the columns of
            ``VForestRegressor.predict_interval``.
        feature_name: label of the x axis.
        truth: optional ``[g]`` true function values, drawn dashed for comparison.

    Returns:
        A figure with one axes: the ribbon ``[lower, upper]``, the mean line and the truth.
    """
    grid_values = np.asarray(grid_values, dtype=float)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(grid_values, lower, upper, alpha=0.3, label="confidence interval")
    ax.plot(grid_values, mean, linewidth=2, label="forest prediction")
    if truth is not None:
        ax.plot(grid_values, truth, linestyle="--", color="black", label="truth")
    ax.set_xlabel(feature_name)
    ax.set_ylabel("prediction")
    ax.legend(loc="best")
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
