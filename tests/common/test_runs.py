import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from winnow.common.config import Config
from winnow.common.exceptions import ConfigError
from winnow.common.report import markdown_table
from winnow.common.runs import (
    RunDir,
    atomic_path,
    atomic_write_text,
    read_step_metrics,
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
