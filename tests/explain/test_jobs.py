"""End-to-end runs of the explain CLI on the shipped Chicago table, kept small."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.config import load_config
from winnow.common.exceptions import InputFileError
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.tables import TableConfig, load_table

runner = CliRunner()


def only_run(folder):
    (run,) = folder.iterdir()
    return run


def test_shipped_table_loads():
    table = load_table(TableConfig())
    assert table.X.shape == (77, 8)
    assert np.isfinite(table.X).all() and np.isfinite(table.y).all()
    assert table.target_name == "log1p(rideshare_pickups_per_1000)"
    assert table.ids[table.row("32")] == 32


def test_table_errors_name_the_columns():
    with pytest.raises(InputFileError, match=r"\['no_such_column'\]"):
        load_table(load_config(TableConfig, overrides=["target=no_such_column"]))
    with pytest.raises(ExplainInputError, match="no row has id"):
        load_table(TableConfig()).row("999")


def test_slime_cli_writes_a_run(tmp_path):
    args = ["explain", "slime", "--out", str(tmp_path), "--quiet"]
    for override in (
        "instances=['76']",
        "repeats=2",
        "model.n_estimators=20",
        "explainer.n_max=1000",
    ):
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    (row,) = summary["instances"]
    assert row["row"] == "76" and row["mean n S-LIME"] <= 1000
    assert (run / "plots" / "slime_76.png").exists()
    assert "instances" in (run / "config.yaml").read_text()
    assert f"report: {run / 'report.html'}" in result.output


def test_forest_cli_writes_a_run(tmp_path):
    args = ["explain", "forest", "--out", str(tmp_path), "--quiet"]
    for override in ("forest.n_estimators=60", "cv_folds=2", "grid_points=5"):
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((only_run(tmp_path) / "metrics.json").read_text())["summary"]
    assert summary["mean_sampling_variance"] >= 0 and summary["mean_interval_width"] > 0
    assert len(summary["cv_r2_folds"]) == 2


def test_forest_report_flags_degenerate_rows(tmp_path):
    # the grouped estimator with few trees clips many zeta_1 at zero (issue 17: "+-0.04")
    args = ["explain", "forest", "--out", str(tmp_path), "--quiet"]
    for override in (
        "forest.n_estimators=40",
        "forest.variance=internal_corrected",
        "cv_folds=2",
        "grid_points=5",
    ):
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    flagged = json.loads((run / "metrics.json").read_text())["summary"]["degenerate_rows"]
    assert 0 < len(flagged) < 77
    assert (
        f"Warning: {len(flagged)} of 77 rows have a degenerate variance"
        in (run / "report.md").read_text()
    )


def test_coverage_cli_writes_a_run(tmp_path):
    args = ["explain", "coverage", "--out", str(tmp_path), "--quiet"]
    for override in (
        "functions=[steps]",
        "subsample_sizes=[20]",
        "tree_counts=[30]",
        "replicates=10",
        "peers=false",
        "n_jobs=1",
    ):
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert set(summary["coverage"]["steps"]["500"]["20"]["30"]) == {"ij_v", "ij_v_calibrated"}
    assert (run / "plots" / "coverage.png").exists()


def test_bad_config_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["explain", "forest", "--out", str(tmp_path), "--set", "alpha=2"])
    assert result.exit_code == 2
    assert "alpha" in result.output and "less than 1" in result.output
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())
