"""The runs under a folder, newest first, as their ``run.json`` describes them (``winnow runs``).

A run made before run folders recorded their status shows as ``unknown``. A run whose
``run.json`` still says ``running`` but whose process is gone from this machine (killed, out
of memory, a power cut: nothing could record its end) shows as ``lost``, not as running.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["RunInfo", "format_duration", "list_runs"]

_REPORTS = ("report.html", "report.md")


@dataclass(frozen=True)
class RunInfo:
    """One run folder: its status and times (timezone-aware, None when not recorded)."""

    path: Path
    status: str
    started: datetime | None
    ended: datetime | None
    error: str | None
    report: Path | None

    @property
    def name(self) -> str:
        return self.path.name

    def duration_s(self, now: datetime | None = None) -> float | None:
        """Seconds from start to end, or to ``now`` while running; None without a start."""
        end = self.ended
        if end is None and self.status == "running":
            end = now or datetime.now(timezone.utc)
        if self.started is None or end is None:
            return None
        return max((end - self.started).total_seconds(), 0.0)


def list_runs(root: str | Path = "runs", limit: int | None = None) -> list[RunInfo]:
    """The run folders directly under ``root`` (those holding ``run.json``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    infos = [_read_run(path) for path in root.iterdir() if (path / "run.json").is_file()]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    infos.sort(key=lambda info: (info.started or oldest, info.name), reverse=True)
    return infos[:limit] if limit is not None else infos


def format_duration(seconds: float | None) -> str:
    """``75.2`` -> ``"1m 15s"``; ``"-"`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _read_run(path: Path) -> RunInfo:
    try:
        meta = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    status = meta.get("status", "unknown")
    if status == "running" and _process_gone(meta):
        status = "lost"
    report = next((path / name for name in _REPORTS if (path / name).is_file()), None)
    return RunInfo(
        path=path,
        status=status,
        # runs from before run status recorded only their local creation time
        started=_parse_time(meta.get("started") or meta.get("created")),
        ended=_parse_time(meta.get("ended")),
        error=meta.get("error"),
        report=report,
    )


def _parse_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()


def _process_gone(meta: dict) -> bool:
    """True when the run's process ran on this machine and no longer exists."""
    pid = meta.get("pid")
    if not isinstance(pid, int) or meta.get("host") != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False
