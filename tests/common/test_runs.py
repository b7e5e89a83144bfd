import json
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from winnow.common.config import Config
from winnow.common.exceptions import ConfigError
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import (
    RunDir,
    atomic_path,
    atomic_write_text,
    exit_status,
    finishing_runs,
    read_step_metrics,
    run_section,
    to_jsonable,
)


class Small(Config):
    lr: float = 0.1


def test_run_folders_are_never_reused(tmp_path):
    first = RunDir("job", root=tmp_path, seed=3)
    second = RunDir("job", root=tmp_path, seed=3)
    assert first.path != second.path
    assert first.path.name.startswith("job-") and second.path.name.startswith("job-")
    meta = json.loads((first.path / "run.json").read_text())
    assert meta["seed"] == 3 and meta["winnow_version"]


def test_bad_run_name(tmp_path):
    with pytest.raises(ConfigError, match="slug"):
        RunDir("../escape", root=tmp_path)


def test_config_metrics_and_summary(tmp_path):
    run = RunDir("job", root=tmp_path, seed=1)
    run.write_config(Small())
    assert (run.path / "config.yaml").read_text() == "lr: 0.1\n"
    run.log_step(0, loss=np.float32(1.5))
    run.log_step(1, loss=1.25, acc=np.array([0.5]))
    steps = read_step_metrics(run.path / "metrics.jsonl")
    assert steps == [{"step": 0, "loss": 1.5}, {"step": 1, "loss": 1.25, "acc": [0.5]}]
    run.write_summary({"final_loss": 1.25, "bad": float("nan")})
    summary = json.loads((run.path / "metrics.json").read_text())
    assert summary["summary"] == {"final_loss": 1.25, "bad": None}
    assert summary["run"]["seed"] == 1


def test_truncated_last_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1, "lo')
    assert read_step_metrics(path) == [{"step": 0}]


def test_report_html_is_self_contained(tmp_path):
    run = RunDir("job", root=tmp_path)
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    plot = run.save_plot(figure, "line")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = markdown_table([{"method": "a", "score": 0.123456}])
    html_path = run.write_report(f"# Title\n\n{table}\n![line](plots/line.png)\n", title="t")
    html = html_path.read_text()
    assert "data:image/png;base64," in html
    assert "plots/line.png" not in html
    assert "<table>" in html and "0.1235" in html
    assert (run.path / "report.md").exists()


def test_report_with_missing_plot_fails_without_writing_html(tmp_path):
    run = RunDir("job", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"plots/none\.png"):
        run.write_report("![x](plots/none.png)\n", title="t")
    assert not (run.path / "report.html").exists()


def test_interrupted_write_keeps_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_to_jsonable_nested():
    value = {"a": (np.int64(2), [np.float64(0.5)]), "b": float("inf")}
    assert to_jsonable(value) == {"a": [2, [0.5]], "b": None}


def test_markdown_table_escapes_pipes_and_handles_empty():
    assert "a\\|b" in markdown_table([{"x": "a|b"}])
    assert "no rows" in markdown_table([])


def test_atomic_write_leaves_a_readable_file(tmp_path):
    path = atomic_write_text(tmp_path / "shared.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o644


# -- run status --------------------------------------------------------------------------------


def read_meta(run_path):
    return json.loads((run_path / "run.json").read_text())


def section_that(outcome):
    """A run_section job that draws nothing and then returns, raises or is interrupted."""

    def make_section(config, run, quiet):
        if outcome is not None:
            raise outcome
        return ReportSection("done", {"ok": 1})

    return make_section


def only_run(root):
    (path,) = [p for p in root.iterdir() if p.is_dir()]
    return path


def test_a_new_run_is_running_with_a_utc_start(tmp_path):
    meta = read_meta(RunDir("job", root=tmp_path).path)
    assert meta["status"] == "running" and meta["ended"] is None
    assert datetime.fromisoformat(meta["started"]).utcoffset() == timedelta(0)


def test_completed_run_records_start_and_end(tmp_path):
    report = run_section("job", Small(), section_that(None), "t", root=tmp_path)
    meta = read_meta(report.parent)
    assert meta["status"] == "completed" and "error" not in meta
    started, ended = (datetime.fromisoformat(meta[k]) for k in ("started", "ended"))
    assert started <= ended
    summary = json.loads((report.parent / "metrics.json").read_text())
    assert "status" not in summary["run"]  # written while the run was still running


def test_failed_run_records_the_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="bad lr"):
        run_section("job", Small(), section_that(ValueError("bad lr\ndetails")), "t", tmp_path)
    meta = read_meta(only_run(tmp_path))
    assert meta["status"] == "failed"
    assert meta["error"] == "ValueError: bad lr"
    assert meta["ended"] is not None


def test_interrupted_run(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_section("job", Small(), section_that(KeyboardInterrupt()), "t", tmp_path)
    meta = read_meta(only_run(tmp_path))
    assert meta["status"] == "interrupted" and "error" not in meta


def test_sigint_to_a_running_job_marks_it_interrupted(tmp_path):
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from winnow.common.runs import RunDir\n"
        "with RunDir('sleeper', root=sys.argv[1]) as run:\n"
        "    print(run.path, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        run_path = Path(child.stdout.readline().strip())
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) != 0
    finally:
        child.kill()
        child.stdout.close()
    assert read_meta(run_path)["status"] == "interrupted"


def test_finishing_runs_ends_runs_their_jobs_left_open(tmp_path):
    with finishing_runs() as started:
        done = RunDir("done", root=tmp_path)
    assert started == [done] and read_meta(done.path)["status"] == "completed"
    with pytest.raises(RuntimeError), finishing_runs():
        broken = RunDir("broken", root=tmp_path)
        raise RuntimeError("disk full")
    assert read_meta(broken.path)["error"] == "RuntimeError: disk full"
    outside = RunDir("outside", root=tmp_path)
    assert read_meta(outside.path)["status"] == "running"


def test_an_exit_that_replaced_an_error_reports_that_error():
    try:
        try:
            raise ConfigError("steps must be > 0")
        except ConfigError:
            raise SystemExit(2) from None
    except SystemExit as exit_:
        assert exit_status(exit_) == ("failed", "ConfigError: steps must be > 0")
    assert exit_status(SystemExit(0)) == ("completed", None)
    assert exit_status(SystemExit(3)) == ("failed", "exit code 3")


def test_the_first_recorded_end_stands_and_a_deleted_run_stays_deleted(tmp_path):
    run = RunDir("job", root=tmp_path)
    run.write_report("# done\n", title="t")
    run.finish("failed", "late")
    assert read_meta(run.path)["status"] == "completed"
    gone = RunDir("gone", root=tmp_path)
    shutil.rmtree(gone.path)
    gone.finish("failed", "bad input")
    assert not gone.path.exists()
    with pytest.raises(ValueError, match="status"):
        RunDir("job", root=tmp_path).finish("running")
