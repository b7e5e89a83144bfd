import hashlib
import json
import shutil
import time

import pytest
from typer.testing import CliRunner

import winnow
import winnow.doctor
from winnow.cli import app
from winnow.common.config import Config
from winnow.common.exceptions import ConfigError
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir, run_section

runner = CliRunner()


class Small(Config):
    lr: float = 0.1


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
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    assert set(summary["ran"]) | set(summary["skipped"]) == {
        "distill",
        "route",
        "search",
        "explain",
    }


# -- winnow runs -----------------------------------------------------------------------------------


def three_runs(root):
    """A completed, a failed and an interrupted run, in that order."""

    def section(outcome):
        def make_section(config, run, quiet):
            if outcome is not None:
                raise outcome
            return ReportSection("done")

        return make_section

    run_section("done", Small(), section(None), "t", root=root)
    for name, outcome in (
        ("broken", ValueError("lr must be > 0")),
        ("stopped", KeyboardInterrupt()),
    ):
        time.sleep(0.01)  # distinct start times
        with pytest.raises(type(outcome)):
            run_section(name, Small(), section(outcome), "t", root=root)


def test_runs_lists_newest_first_with_status_duration_and_report(tmp_path):
    three_runs(tmp_path)
    result = runner.invoke(app, ["runs", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header, *lines = result.output.strip().splitlines()
    assert header.split() == ["run", "status", "started", "duration", "report", "error"]
    assert [line.split()[:2] for line in lines] == [
        [next(tmp_path.glob("stopped-*")).name, "interrupted"],
        [next(tmp_path.glob("broken-*")).name, "failed"],
        [next(tmp_path.glob("done-*")).name, "completed"],
    ]
    assert lines[1].endswith("ValueError: lr must be > 0")
    assert str(next(tmp_path.glob("done-*")) / "report.html") in lines[2]
    assert lines[2].split()[4] == "0s"
    limited = runner.invoke(app, ["runs", "--root", str(tmp_path), "--limit", "1"])
    assert len(limited.output.strip().splitlines()) == 2 and "interrupted" in limited.output


def test_runs_on_an_empty_root(tmp_path):
    result = runner.invoke(app, ["runs", "--root", str(tmp_path / "none")])
    assert result.exit_code == 0 and "no runs under" in result.output


def test_every_command_records_how_its_runs_ended(tmp_path, monkeypatch):
    """A job that never ends its own run (the demo) still leaves a status through the CLI."""

    def failing_demo(root, quiet, log):
        RunDir("demo", root=root)
        raise ConfigError("no capability installed")

    monkeypatch.setattr("winnow.demo.run_demo", failing_demo)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code != 0
    meta = json.loads((next(tmp_path.iterdir()) / "run.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"] == "ConfigError: no capability installed"


# -- winnow doctor ---------------------------------------------------------------------------------


def dataset(root, name, sums=True):
    folder = root / name
    folder.mkdir()
    (folder / "table.csv").write_bytes(b"a\n1\n")
    if sums:
        digest = hashlib.sha256(b"a\n1\n").hexdigest()
        (folder / "SHA256SUMS").write_text(f"{digest}  table.csv\n")
    return folder


def doctor(data_root, *args):
    return runner.invoke(
        app, ["doctor", *args], env={"COLUMNS": "250", "WINNOW_DATA": str(data_root)}
    )


def row(output, name):
    return next(line for line in output.splitlines() if f" {name} " in line)


def test_doctor_fails_on_missing_or_changed_data_but_not_on_unverified(tmp_path):
    dataset(tmp_path, "routing")
    dataset(tmp_path, "search", sums=False)
    result = doctor(tmp_path)
    assert result.exit_code == 1
    assert "missing" in row(result.output, "data ridesourcing")
    assert "unverified" in row(result.output, "data search")
    assert "this alone does not fail the doctor" in result.output
    assert "1 problem(s): data ridesourcing" in result.output

    dataset(tmp_path, "ridesourcing")
    assert doctor(tmp_path).exit_code == 0
    (tmp_path / "routing" / "table.csv").write_bytes(b"a\n2\n")
    changed = doctor(tmp_path)
    assert changed.exit_code == 1 and "failed" in row(changed.output, "data routing")
    assert "changed: table.csv" in row(changed.output, "data routing")


def test_doctor_requires_only_the_extras_asked_for(tmp_path, monkeypatch):
    for name in ("routing", "search", "ridesourcing"):
        dataset(tmp_path, name)
    real = winnow.doctor.missing_modules
    monkeypatch.setattr(
        winnow.doctor,
        "missing_modules",
        lambda extra: ["uvicorn"] if extra == "serve" else real(extra),
    )
    everything = doctor(tmp_path)
    assert everything.exit_code == 1 and "missing" in row(everything.output, "extra [serve]")
    shutil.rmtree(tmp_path / "search")
    route_only = doctor(tmp_path, "--extra", "route")
    assert route_only.exit_code == 0, route_only.output
    assert "not required" in row(route_only.output, "extra [serve]")
    assert "not required" in row(route_only.output, "data search")
    assert doctor(tmp_path, "--extra", "nope").exit_code == 2
