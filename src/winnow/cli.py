"""The ``winnow`` command: mounts each capability's sub-app, plus ``doctor``, ``runs`` and ``demo``.

Every command runs inside :func:`~winnow.common.runs.finishing_runs`, so each run folder it
starts ends up ``completed``, ``failed`` or ``interrupted`` in its run.json.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

import winnow
from winnow.common.cli import user_errors
from winnow.common.runs import finishing_runs
from winnow.common.verbosity import request_verbose
from winnow.demo import CAPABILITIES


class _RunRecordingGroup(TyperGroup):
    """The root group: the subcommand's runs record how it ended, whatever the command."""

    def invoke(self, ctx: click.Context):
        with finishing_runs():
            return super().invoke(ctx)


app = typer.Typer(
    name="winnow",
    cls=_RunRecordingGroup,
    help="Spend compute where the signal is: distill, route, search, explain.",
    no_args_is_help=True,
    add_completion=False,
)

_STATUS_STYLE = {
    "ok": "green",
    "completed": "green",
    "running": "cyan",
    "unverified": "yellow",
    "not required": "dim",
    "interrupted": "yellow",
    "unknown": "dim",
}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"winnow {winnow.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Let the libraries' own output through (transformers' bars and warnings, HiGHS's "
        "log); by default a run prints only winnow's lines.",
    ),
) -> None:
    """winnow: on-policy distillation, batch LLM routing, distilled ranking, sound explanations."""
    if verbose:
        request_verbose()


def _styled(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'red')}]{escape(status)}[/]"


@app.command()
def doctor(
    extras: list[str] = typer.Option(
        None, "--extra", help="Require only this extra and its data (repeatable); default: all."
    ),
) -> None:
    """Show Python, torch, devices, extras and data sets; exit 1 if a required one is missing
    or fails its checksum."""
    from winnow.doctor import collect_checks

    with user_errors():
        checks = collect_checks(extras)
    table = Table(title=f"winnow {winnow.__version__}")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(escape(check.name), _styled(check.status), escape(check.detail))
    console = Console()
    console.print(table)
    if any(check.status == "unverified" for check in checks):
        console.print(
            "unverified: a data set folder without SHA256SUMS is used as it is; its files "
            "were not checked, and this alone does not fail the doctor."
        )
    failing = [check.name for check in checks if not check.ok]
    if failing:
        console.print(f"[red]doctor: {len(failing)} problem(s):[/red] {escape(', '.join(failing))}")
        raise typer.Exit(code=1)


def _run_row(info) -> tuple[str, ...]:
    """name, status, local start time, duration, report, error of a ``RunInfo``."""
    from winnow.common.run_listing import format_duration

    started = info.started.astimezone().strftime("%Y-%m-%d %H:%M:%S") if info.started else "-"
    report = str(info.report) if info.report else "-"
    duration = format_duration(info.duration_s())
    return (info.name, info.status, started, duration, report, info.error or "")


@app.command()
def runs(
    root: Path = typer.Option(Path("runs"), "--root", help="Folder that holds the run folders."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Show at most this many runs."),
) -> None:
    """List recent runs, newest first: status, start, duration and report."""
    from winnow.common.run_listing import list_runs

    infos = list_runs(root, limit)
    if not infos:
        typer.echo(f"no runs under {root}")
        return
    rows = [_run_row(info) for info in infos]
    header = ("run", "status", "started", "duration", "report", "error")
    if not any(row[-1] for row in rows):
        header, rows = header[:-1], [row[:-1] for row in rows]
    console = Console()
    if console.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*(_styled(c) if i == 1 else escape(c) for i, c in enumerate(row)))
        console.print(table)
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@app.command()
def demo(
    out: Path = typer.Option(Path("runs"), help="Folder that receives the run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run each installed capability's demo on shipped data and write one HTML report."""
    from winnow.demo import run_demo

    result = run_demo(root=out, quiet=quiet, log=typer.echo)
    typer.echo(f"report: {result.report}")


for _name in CAPABILITIES:
    if importlib.util.find_spec(f"winnow.{_name}") and importlib.util.find_spec(
        f"winnow.{_name}.cli"
    ):
        app.add_typer(importlib.import_module(f"winnow.{_name}.cli").app, name=_name)
