"""Figures for routing evaluations (matplotlib object API, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from winnow.route.evaluate import BatchOutcome

__all__ = ["plot_accuracy_vs_budget", "plot_batch_spend"]


def plot_accuracy_vs_budget(rows: Sequence[Mapping], streams: Sequence[str]) -> Figure:
    """Accuracy against the per-query budget, one panel per stream, one line per router.

    ``rows`` are dicts with ``stream``, ``router``, ``budget_per_query``, ``accuracy`` and
    ``batches_over_budget``; a hollow marker shows a point whose router broke the budget.
    """
    fig = Figure(figsize=(4.2 * len(streams), 4.2), layout="constrained")
    axes = fig.subplots(1, len(streams), sharey=True, squeeze=False)[0]
    routers = list(dict.fromkeys(r["router"] for r in rows))
    for ax, stream in zip(axes, streams, strict=True):
        for router in routers:
            points = sorted(
                (r["budget_per_query"], r["accuracy"], r["batches_over_budget"])
                for r in rows
                if r["stream"] == stream and r["router"] == router
            )
            budgets, accuracy, over = (np.array(v) for v in zip(*points, strict=True))
            (line,) = ax.plot(budgets * 1e3, accuracy, marker="o", label=router)
            broke = over > 0
            ax.scatter(
                budgets[broke] * 1e3,
                accuracy[broke],
                s=90,
                facecolors="white",
                edgecolors=line.get_color(),
                zorder=3,
            )
        ax.set_title(f"{stream} batches")
        ax.set_xlabel("budget (USD per 1,000 queries)")
    axes[0].set_ylabel("accuracy (true outcomes)")
    axes[-1].legend(fontsize=7, loc="lower right")
    return fig


def plot_batch_spend(traces: Mapping[str, Sequence[BatchOutcome]]) -> Figure:
    """Spend of each batch against its budget, per router (``{router: outcomes}``)."""
    fig = Figure(figsize=(7.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    budget = None
    for router, outcomes in traces.items():
        spend = np.array([o.spend for o in outcomes])
        ax.plot(np.arange(1, len(spend) + 1), spend, marker="o", label=router)
        budget = np.array([o.budget for o in outcomes])
    if budget is not None:
        ax.step(np.arange(1, len(budget) + 1), budget, where="mid", color="black", label="budget")
    ax.set_xlabel("batch (adversarial stream: hardest queries first)")
    ax.set_ylabel("spend (USD)")
    ax.legend(fontsize=8)
    return fig
