"""Search plots: the loss curves of a run where some models took no training step; legends
placed beside the data, never over it."""

import warnings

import pytest

from winnow.search.plots import (
    plot_fold_values,
    plot_loss_curves,
    plot_system_means,
)


def test_loss_curves_name_models_that_took_no_step_instead_of_failing():
    figure = plot_loss_curves({"teacher": [], "student": [1.0, 0.8, 0.5, 0.4]}, window=2)
    (ax,) = figure.axes
    (line,) = ax.get_lines()
    assert line.get_label() == "student" and list(line.get_ydata()) == [0.9, 0.65, 0.45]
    assert "teacher" in ax.get_title()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no artists with labels" legend warning
        (ax,) = plot_loss_curves({"teacher": []}).axes
    assert not ax.get_lines() and ax.get_legend() is None


SYSTEMS = ["bm25", "dense", "hybrid", "teacher", "student", "student int8"]


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plot_system_means(
            [{"system": name, "ndcg@10": 0.9, "recall@100": 0.95} for name in SYSTEMS],
            ["ndcg@10", "recall@100"],
        ),
        lambda: plot_fold_values(
            {name: {"ndcg@10": [0.2, 0.9, 0.5]} for name in SYSTEMS}, "ndcg@10"
        ),
        lambda: plot_loss_curves({name: [1.0, 0.5, 0.2] for name in SYSTEMS}, window=1),
    ],
    ids=["system_means", "fold_values", "loss_curves"],
)
def test_legend_lies_outside_the_axes(draw):
    figure = draw()
    figure.draw_without_rendering()  # runs the layout that places an outside legend
    (legend,) = figure.legends
    (ax,) = figure.axes
    assert len(legend.get_texts()) == len(SYSTEMS)
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
