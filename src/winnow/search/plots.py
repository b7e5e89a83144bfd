"""Figures for the search capability, drawn with matplotlib's object API (no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_fold_values",
    "plot_interval_forest",
    "plot_loss_curves",
    "plot_per_query",
    "plot_system_means",
]


def plot_system_means(rows: list[dict], metrics: list[str]) -> Figure:
    """Grouped bars: one group per metric, one bar per system (``rows[i]["system"]``)."""
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    centers = np.arange(len(metrics))
    for k, row in enumerate(rows):
        x = centers + (k - (len(rows) - 1) / 2) * width
        ax.bar(x, [row[m] for m in metrics], width, label=row["system"])
    ax.set_xticks(centers, metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over queries")
    _legend_beside(fig, ax, fontsize=8)
    return fig


def plot_per_query(first: dict[str, float], second: dict[str, float], metric: str) -> Figure:
    """One point per query: ``first`` (x) against ``second`` (y), with the diagonal."""
    queries = sorted(set(first) & set(second))
    fig = Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter([first[q] for q in queries], [second[q] for q in queries], s=18)
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"BM25 {metric}")
    ax.set_ylabel(f"dense {metric}")
    ax.set_title("per query", fontsize=10)
    return fig


def plot_loss_curves(histories: dict[str, list[float]], window: int = 10) -> Figure:
    """Training loss per step of each model, as a moving average over ``window`` steps; models
    that took no step (``epochs: 0``) are named in the title, not drawn."""
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    untrained = [name for name, history in histories.items() if not len(history)]
    if untrained:
        ax.set_title(f"not trained (as loaded): {', '.join(untrained)}", fontsize=9)
    for name, history in histories.items():
        values = np.asarray(history, dtype=float)
        if not values.size:
            continue
        width = max(1, min(window, values.size))
        smooth = np.convolve(values, np.ones(width) / width, mode="valid")
        ax.plot(np.arange(smooth.size) + width, smooth, label=name, linewidth=1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"loss ({window}-step mean)")
    if len(untrained) < len(histories):
        _legend_beside(fig, ax, fontsize=8)
    return fig


def plot_interval_forest(versus: dict, metric: str, baseline: str) -> Figure:
    """Each system's mean difference from ``baseline`` with its interval, one row per system
    (``versus[system][metric]`` = ``{"difference", "low", "high"}``)."""
    names = list(versus)
    fig = Figure(figsize=(7.0, 0.4 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    for row, name in enumerate(names):
        gap = versus[name][metric]
        ax.plot([gap["low"], gap["high"]], [row, row], color="tab:blue", linewidth=2)
        ax.plot(gap["difference"], row, "o", color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} minus {baseline} (95% paired bootstrap interval)")
    return fig


def plot_fold_values(per_fold: dict, metric: str) -> Figure:
    """``per_fold[system][metric]`` as one line per system across folds."""
    fig = Figure(figsize=(7.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for name, values in per_fold.items():
        folds = np.arange(len(values[metric]))
        ax.plot(folds, values[metric], marker="o", linewidth=1, label=name)
    ax.set_xticks(np.arange(len(next(iter(per_fold.values()))[metric])))
    ax.set_xlabel("fold (its held-out queries)")
    ax.set_ylabel(f"{metric}, mean over the fold")
    _legend_beside(fig, ax, fontsize=7)
    return fig


def _legend_beside(fig: Figure, ax, fontsize: int) -> None:
    """The legend right of the axes, never over bars or lines (constrained layout makes room)."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=fontsize)
