"""Route figures: routers that break a capacity are marked and counted; legends sit off the data."""

import numpy as np

from winnow.route.evaluate import BatchOutcome
from winnow.route.plots import plot_accuracy_vs_budget, plot_batch_spend


def _rows() -> list[dict]:
    rows = []
    for stream in ("random", "adversarial"):
        for k, budget in enumerate((0.001, 0.002)):
            for router, accuracy, excess in (("batch", 0.70, 0), ("best single model", 0.6, 418)):
                rows.append(
                    {
                        "stream": stream,
                        "router": router,
                        "budget_per_query": budget,
                        "accuracy": accuracy + 0.05 * k,
                        "batches_over_budget": 0,
                        "capacity_violations": excess,
                    }
                )
    return rows


def _legend_is_off_the_axes(figure) -> bool:
    figure.draw_without_rendering()  # runs the layout that places an outside legend
    (legend,) = figure.legends
    box = legend.get_window_extent()
    return not any(box.overlaps(ax.get_window_extent()) for ax in figure.axes)


def test_a_router_over_capacity_is_crossed_and_counted_in_the_legend():
    figure = plot_accuracy_vs_budget(_rows(), ["random", "adversarial"])
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "batch" in labels and "broke a capacity" in labels
    assert any("best single model" in t and "over capacity: 418 queries" in t for t in labels)
    for ax in figure.axes:
        marked = np.vstack([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        assert np.allclose(sorted(marked[:, 1]), [0.6, 0.65])  # only best single model's points
    assert _legend_is_off_the_axes(figure)


def test_spend_legend_is_off_the_axes():
    outcomes = [BatchOutcome(10, 5.0, 0.01 * b, 0.02, 0.0, 0) for b in range(1, 4)]
    figure = plot_batch_spend({"batch": outcomes, "per-query": outcomes})
    assert _legend_is_off_the_axes(figure)
