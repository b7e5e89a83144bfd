"""Progress bars with live metrics for long loops; silent off a terminal or when quiet."""

from __future__ import annotations

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

__all__ = ["ProgressTracker", "format_metrics", "track_progress"]


def format_metrics(metrics: dict[str, Any]) -> str:
    """``{"loss": 0.1234567, "step": 3}`` -> ``"loss=0.1235 step=3"``."""
    parts = []
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


class ProgressTracker:
    """Handle on one progress bar: ``advance(1, loss=...)`` moves it and shows the metrics."""

    def __init__(self, progress: Progress, task_id: int):
        self._progress = progress
        self._task_id = task_id
        self.completed = 0

    def advance(self, steps: int = 1, **metrics: Any) -> None:
        self.completed += steps
        fields = {"metrics": format_metrics(metrics)} if metrics else {}
        self._progress.update(self._task_id, advance=steps, **fields)


@contextmanager
def track_progress(
    description: str, total: int | None, quiet: bool = False, console: Console | None = None
) -> Iterator[ProgressTracker]:
    """Show a progress bar for ``total`` steps while the block runs.

    The bar is drawn only when the console is an interactive terminal and ``quiet`` is false,
    so logs and CI output stay clean.
    """
    console = console or Console(stderr=True)
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
        yield ProgressTracker(progress, task_id)
