import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from winnow.common.run_listing import format_duration, list_runs
from winnow.common.runs import RunDir


def rewrite(run: RunDir, **fields) -> None:
    path = run.path / "run.json"
    meta = json.loads(path.read_text()) | fields
    path.write_text(json.dumps({k: v for k, v in meta.items() if v is not ...}))


def test_runs_are_newest_first_with_their_status_and_report(tmp_path):
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    runs = [RunDir(name, root=tmp_path) for name in ("first", "second", "third")]
    runs[1].write_report("# r\n", title="t")
    for minutes, run in enumerate(runs):
        began = start + timedelta(minutes=minutes)
        rewrite(run, started=began.isoformat(), ended=(began + timedelta(seconds=75)).isoformat())
    infos = list_runs(tmp_path)
    assert [info.path.name.split("-")[0] for info in infos] == ["third", "second", "first"]
    assert infos[1].report == runs[1].path / "report.html" and infos[0].report is None
    assert infos[1].duration_s() == 75
    assert [i.path.name for i in list_runs(tmp_path, limit=2)] == [
        runs[2].path.name,
        runs[1].path.name,
    ]


def test_a_run_without_status_is_unknown_and_sorted_by_its_creation_time(tmp_path):
    new = RunDir("new", root=tmp_path)
    old = RunDir("old", root=tmp_path)
    rewrite(old, status=..., started=..., ended=..., created="2020-01-01T09:00:00+01:00")
    (tmp_path / "not-a-run").mkdir()
    infos = list_runs(tmp_path)
    assert [info.path for info in infos] == [new.path, old.path]
    assert infos[1].status == "unknown"
    assert infos[1].started == datetime(2020, 1, 1, 8, tzinfo=timezone.utc)
    assert infos[1].duration_s() is None


def test_a_running_run_whose_process_is_gone_is_lost(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = RunDir("dead", root=tmp_path)
    rewrite(dead, pid=int(child.stdout))
    alive = RunDir("alive", root=tmp_path)
    elsewhere = RunDir("elsewhere", root=tmp_path)
    rewrite(elsewhere, pid=int(child.stdout), host=platform.node() + "-other")
    status = {info.path: info.status for info in list_runs(tmp_path)}
    assert status[dead.path] == "lost"
    assert (
        status[alive.path] == "running"
        and os.getpid() == json.loads((alive.path / "run.json").read_text())["pid"]
    )
    assert status[elsewhere.path] == "running"


def test_a_missing_root_has_no_runs(tmp_path):
    assert list_runs(tmp_path / "absent") == []


def test_format_duration():
    assert [format_duration(s) for s in (None, 4.4, 75.2, 3725)] == ["-", "4s", "1m 15s", "1h 02m"]
