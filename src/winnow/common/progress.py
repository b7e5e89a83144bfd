"""Progress bars with live metrics for long loops; plain periodic lines off a terminal.

A job run under ``nohup`` or in CI has no terminal to draw on, yet its log must still say how
far it got: there a line is printed at most every ``interval_s`` seconds, and one at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["PLAIN_INTERVAL_S", "ProgressTracker", "format_metrics", "track_progress"]

PLAIN_INTERVAL_S = 10.0


def format_metrics(metrics: dict[str, Any]) -> str:
    """``{"loss": 0.1234567, "step": 3, "acc": None}`` -> ``"loss=0.1235 step=3"``."""
    parts = []
    for key, value in metrics.items():
        if value is None:  # not measured at this step (e.g. no eval yet)
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


class ProgressTracker:
    """Handle on one progress bar: ``advance(1, loss=...)`` moves it and shows the metrics.

    With ``plain`` set (off a terminal) it prints a line at most every ``interval_s`` seconds
    instead of drawing the bar.
    """

    def __init__(
        self,
        progress: Progress,
        task_id: int,
        plain: Console | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
    ):
        self._progress = progress
        self._task_id = task_id
        self._plain = plain
        self._interval_s = interval_s
        self._started = self._last_line = time.monotonic()
        self._metrics = ""
        self._printed = 0
        self.completed = 0

    def advance(self, steps: int = 1, **metrics: Any) -> None:
        self.completed += steps
        if metrics:
            self._metrics = format_metrics(metrics)
        fields = {"metrics": self._metrics} if metrics else {}
        self._progress.update(self._task_id, advance=steps, **fields)
        if self._plain is not None and time.monotonic() - self._last_line >= self._interval_s:
            self.print_line()

    def print_line(self) -> None:
        """``work: 40/200 (20%), 3m12s elapsed, 4.8 s each, ~12m48s left, loss=0.5``."""
        task = self._progress.tasks[self._task_id]
        elapsed = time.monotonic() - self._started
        done = f"{self.completed}"
        parts = []
        if task.total:
            done += f"/{task.total:g} ({100 * self.completed / task.total:.0f}%)"
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.completed and elapsed > 0:
            rate = self.completed / elapsed
            parts.append(f"{rate:.3g}/s" if rate >= 1 else f"{1 / rate:.3g} s each")
        if task.total and 0 < self.completed < task.total:
            parts.append(f"~{_duration(elapsed * (task.total / self.completed - 1))} left")
        if self._metrics:
            parts.append(self._metrics)
        line = f"{task.description}: {done}, " + ", ".join(parts)
        self._plain.print(line, highlight=False, soft_wrap=True)  # one line in any log width
        self._last_line = time.monotonic()
        self._printed = self.completed

    def finish(self) -> None:
        """Off a terminal, print the final count unless the last line already showed it."""
        if self._plain is not None and self.completed != self._printed:
            self.print_line()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def track_progress(
    description: str,
    total: int | None,
    quiet: bool = False,
    console: Console | None = None,
    interval_s: float = PLAIN_INTERVAL_S,
) -> Iterator[ProgressTracker]:
    """Show a progress bar for ``total`` steps while the block runs.

    On an interactive terminal the bar is drawn live; off one (a log file, CI) a plain line is
    printed at most every ``interval_s`` seconds and once at the end. ``quiet`` silences both.
    """
    console = console or Console(stderr=True)
    plain = None if quiet or console.is_terminal else console
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=False,
    )
    with progress:
        task_id = progress.add_task(description, total=total, metrics="")
        tracker = ProgressTracker(progress, task_id, plain, interval_s)
        yield tracker
        tracker.finish()
