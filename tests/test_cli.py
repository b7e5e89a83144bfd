import json

from typer.testing import CliRunner

import winnow
from winnow.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output and "demo" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"winnow {winnow.__version__}"


def test_doctor_reports_environment_and_data():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for expected in ("python", "torch", "extra [explain]", "extra [route]"):
        assert expected in result.output
    for dataset in ("routing", "search", "ridesourcing"):
        assert f"data {dataset}" in result.output


def test_demo_writes_one_run_folder_with_report(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    report = run_dir / "report.html"
    assert f"report: {report}" in result.output
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "winnow demo" in html
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    assert set(summary["ran"]) | set(summary["skipped"]) == {
        "distill",
        "route",
        "search",
        "explain",
    }
