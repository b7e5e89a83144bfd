"""Figures for routing evaluations (matplotlib object API, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from winnow.route.evaluate import BatchOutcome

__all__ = ["plot_accuracy_vs_budget", "plot_batch_spend"]

_LINE_STYLES = ("-", "--", ":")
_POINT_KEYS = ("budget_per_query", "accuracy", "batches_over_budget", "capacity_violations")


def plot_accuracy_vs_budget(rows: Sequence[Mapping], streams: Sequence[str]) -> Figure:
    """Accuracy against the per-query budget, one panel per stream, one line per router.

    ``rows`` are dicts with ``stream``, ``router``, ``budget_per_query``, ``accuracy``,
    ``batches_over_budget`` and ``capacity_violations``. A hollow marker shows a point whose
    router broke the budget, a cross one that broke a capacity; a router that broke capacities
    says how often in its legend entry, so that no line reads as a fair comparison unmarked.
    The legend sits beside the panels, off the data.
    """
    fig = Figure(figsize=(4.2 * len(streams) + 2.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(streams), sharey=True, squeeze=False)[0]
    routers = list(dict.fromkeys(r["router"] for r in rows))
    handles = {}
    for ax, stream in zip(axes, streams, strict=True):
        for index, router in enumerate(routers):
            points = sorted(
                tuple(r[key] for key in _POINT_KEYS)
                for r in rows
                if r["stream"] == stream and r["router"] == router
            )
            budgets, accuracy, over, excess = (np.array(v) for v in zip(*points, strict=True))
            budgets = budgets * 1e3
            style = _LINE_STYLES[index // 10 % len(_LINE_STYLES)]  # the colour cycle has 10
            (line,) = ax.plot(budgets, accuracy, marker="o", ls=style, label=router)
            handles.setdefault(router, line)
            color = line.get_color()
            broke = over > 0
            ax.scatter(budgets[broke], accuracy[broke], s=90, fc="white", ec=color, zorder=3)
            crowded = excess > 0
            ax.scatter(
                budgets[crowded], accuracy[crowded], s=110, marker="x", color=color, lw=2, zorder=4
            )
        ax.set_title(f"{stream} batches")
        ax.set_xlabel("budget (USD per 1,000 queries)")
    axes[0].set_ylabel("accuracy (true outcomes)")
    labels = [_router_label(router, rows) for router in routers]
    keys = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="grey", ms=9, label="broke a budget"),
        Line2D([], [], marker="x", ls="", color="grey", mew=2, ms=9, label="broke a capacity"),
    ]
    fig.legend(
        [*handles.values(), *keys],
        [*labels, *(key.get_label() for key in keys)],
        loc="outside right upper",
        fontsize=7,
    )
    return fig


def _router_label(router: str, rows: Sequence[Mapping]) -> str:
    """``router``, with the queries it put over a model's capacity (per stream and budget)."""
    counts = sorted({r["capacity_violations"] for r in rows if r["router"] == router} - {0})
    if not counts:
        return router
    span = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
    return f"{router}\n(over capacity: {span} queries)"


def plot_batch_spend(traces: Mapping[str, Sequence[BatchOutcome]]) -> Figure:
    """Spend of each batch against its budget, per router (``{router: outcomes}``); the legend
    sits beside the axes, off the data."""
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
    fig.legend(loc="outside right upper", fontsize=8)
    return fig
