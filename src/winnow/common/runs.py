"""Run folders: every run writes its config, metrics, plots and report into a folder of its own.

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>/``::

    run.json       package version, seed, command line, Python and platform; status, started, ended
    config.yaml    the resolved config, loadable again with ``load_config``
    metrics.jsonl  one JSON object per logged step, appended as the run goes
    metrics.json   the final summary (plus the run metadata), written once at the end
    plots/*.png    figures
    report.md      human-readable report; report.html is the same, self-contained

Every whole-file write goes to a temporary file in the same folder and is renamed into place, so
a crash leaves either the previous file or the new one, never half of one.

``run.json`` says how the run went, so a failed or stopped run is not taken for a finished one:
``status`` is ``running`` from the start, then ``completed`` (the report is written or the job
returned), ``failed`` (with ``error``, the exception's one line) or ``interrupted`` (Ctrl-C);
``started`` and ``ended`` are UTC times. A job that uses its run as a context manager records
its own end; :func:`finishing_runs` records it for runs started inside a block (the CLI wraps
every command in one), so jobs need not do anything.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import winnow
from winnow.common.config import config_to_yaml
from winnow.common.exceptions import ConfigError
from winnow.common.report import ReportSection, render_html

__all__ = [
    "RUN_STATUSES",
    "RunDir",
    "atomic_path",
    "atomic_write_text",
    "exit_status",
    "finishing_runs",
    "read_step_metrics",
    "run_section",
    "to_jsonable",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RUN_STATUSES = ("running", "completed", "failed", "interrupted")
_ERROR_CHARS = 500
# The runs started inside the innermost ``finishing_runs`` block; None outside any block.
_OPEN_RUNS: ContextVar[list[RunDir] | None] = ContextVar("winnow_open_runs", default=None)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    >>> with atomic_path("out.png") as tmp:  # doctest: +SKIP
    ...     fig.savefig(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are meant to be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays, paths and pydantic models to plain JSON values.

    Non-finite floats become ``None`` so that the files stay strict JSON.
    """
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _utc_now() -> str:
    """The current time in UTC, ISO 8601 with milliseconds (runs started in one second sort)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def exit_status(error: BaseException | None) -> tuple[str, str | None]:
    """``(status, error line)`` of a run whose job ended by raising ``error`` (None: returned).

    Ctrl-C is ``interrupted``; an exit with code 0 (``SystemExit``, click's ``Exit``) is
    ``completed``; anything else ``failed``. An exit that replaced an error (``user_errors``
    turns a WinnowError into exit code 2) reports the error it replaced.
    """
    if error is None:
        return "completed", None
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", None
    if isinstance(error, SystemExit) or hasattr(error, "exit_code"):
        code = error.code if isinstance(error, SystemExit) else error.exit_code
        if code in (0, None):
            return "completed", None
        replaced = error.__cause__ or error.__context__
        if replaced is None and not getattr(error, "message", None):
            return "failed", f"exit code {code}"
        error = replaced or error
    message = str(getattr(error, "message", None) or error).strip()
    line = f"{type(error).__name__}: {message.splitlines()[0]}" if message else type(error).__name__
    return "failed", line[:_ERROR_CHARS]


@contextmanager
def finishing_runs() -> Iterator[list[RunDir]]:
    """Record the end of every run started inside the block that did not record its own.

    Yields the list of those runs. The status comes from how the block ends
    (:func:`exit_status`); the exception, if any, propagates unchanged.
    """
    runs: list[RunDir] = []
    token = _OPEN_RUNS.set(runs)
    try:
        yield runs
    except BaseException as error:
        for run in runs:
            run.finish(*exit_status(error))
        raise
    else:
        for run in runs:
            run.finish("completed")
    finally:
        _OPEN_RUNS.reset(token)


def read_step_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``; a last line cut short by a crash is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class RunDir:
    """A fresh folder for one run under ``root``; never reuses an existing folder.

    ``run.json`` says ``running`` until :meth:`finish`, :meth:`write_report` or the end of a
    ``with RunDir(...) as run:`` block records how the run ended.

    Parameters
    ----------
    name : a short slug (letters, digits, ``_.-``) naming the job, e.g. ``"demo"``.
    root : parent folder of all runs.
    seed : the run's random seed, recorded in ``run.json`` and ``metrics.json``.
    """

    def __init__(self, name: str, root: str | Path = "runs", seed: int | None = None):
        if not _NAME.match(name):
            raise ConfigError(
                f"run name {name!r} is not a slug; use letters, digits, '_', '.' or '-' "
                "and start with a letter or digit"
            )
        self.name = name
        self.seed = seed
        self.path = _create_unique(Path(root), name)
        self.plots = self.path / "plots"
        self.plots.mkdir()
        self.meta = {
            "name": name,
            "winnow_version": winnow.__version__,
            "seed": seed,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "argv": sys.argv,
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        # Kept apart from ``meta``, which metrics.json copies while the run is still running.
        self._end: dict[str, Any] = {
            "status": "running",
            "started": _utc_now(),
            "ended": None,
            "pid": os.getpid(),
            "host": platform.node(),
        }
        self._write_json("run.json", self.meta | self._end)
        open_runs = _OPEN_RUNS.get()
        if open_runs is not None:
            open_runs.append(self)

    @property
    def status(self) -> str:
        """One of :data:`RUN_STATUSES`."""
        return self._end["status"]

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Record in ``run.json`` how the run ended; only the first call after the start counts.

        A run folder deleted meanwhile (a job that cleans up after bad input) stays deleted.
        """
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"status must be one of {RUN_STATUSES[1:]}, got {status!r}")
        if self.status != "running" or not self.path.is_dir():
            return
        self._end |= {"status": status, "ended": _utc_now()}
        if error is not None:
            self._end["error"] = error
        self._write_json("run.json", self.meta | self._end)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, error, traceback) -> None:
        self.finish(*exit_status(error))

    def write_config(self, config: BaseModel) -> Path:
        """Save the resolved config as ``config.yaml``."""
        return atomic_write_text(self.path / "config.yaml", config_to_yaml(config))

    def log_step(self, step: int, **metrics: Any) -> None:
        """Append one line ``{"step": step, **metrics}`` to ``metrics.jsonl``."""
        line = json.dumps(to_jsonable({"step": step, **metrics}), allow_nan=False) + "\n"
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``metrics.json``: the run metadata and the final ``summary`` object."""
        return self._write_json("metrics.json", {"run": self.meta, "summary": summary})

    def save_plot(self, figure: Any, name: str) -> Path:
        """Save a matplotlib figure as ``plots/<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        target = self.plots / f"{name}.png"
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        return target

    def write_report(self, markdown_text: str, title: str) -> Path:
        """Write ``report.md`` and a self-contained ``report.html``; return the HTML path.

        The report is a run's last output, so writing it marks the run ``completed``.
        """
        atomic_write_text(self.path / "report.md", markdown_text)
        html = render_html(markdown_text, base_dir=self.path, title=title)
        report = atomic_write_text(self.path / "report.html", html)
        self.finish("completed")
        return report

    def _write_json(self, filename: str, payload: Any) -> Path:
        text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n"
        return atomic_write_text(self.path / filename, text)


def _create_unique(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    for attempt in range(1, 1000):
        candidate = root / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a new run folder for {stem} under {root}")


def run_section(
    name: str,
    config: BaseModel,
    make_section: Callable[[Any, RunDir, bool], ReportSection],
    title: str,
    root: str | Path = "runs",
    quiet: bool = False,
    heading: str | None = None,
) -> Path:
    """One job in a new run folder: config, the section's plots, summary and report.

    ``make_section(config, run, quiet)`` draws into the run and returns its section; the report
    starts with ``# heading`` (default ``title``). Returns the path of ``report.html``.
    """
    with RunDir(name, root=root, seed=getattr(config, "seed", None)) as run:
        run.write_config(config)
        section = make_section(config, run, quiet)
        run.write_summary(section.summary)
        return run.write_report(f"# {heading or title}\n\n{section.markdown}", title=title)
