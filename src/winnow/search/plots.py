"""Figures for the search capability, drawn with matplotlib's object API (no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_loss_curves", "plot_per_query", "plot_system_means"]


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
    ax.legend(fontsize=8, ncols=2, loc="lower right")
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
    """Training loss per step of each model, as a moving average over ``window`` steps."""
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for name, history in histories.items():
        values = np.asarray(history, dtype=float)
        width = max(1, min(window, values.size))
        smooth = np.convolve(values, np.ones(width) / width, mode="valid")
        ax.plot(np.arange(smooth.size) + width, smooth, label=name, linewidth=1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"loss ({window}-step mean)")
    ax.legend(fontsize=8)
    return fig
