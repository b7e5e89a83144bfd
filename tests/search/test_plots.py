"""Search plots: the loss curves of a run where some models took no training step."""

import warnings

from winnow.search.plots import plot_loss_curves


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
