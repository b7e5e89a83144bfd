"""The ``winnow`` command: mounts each capability's sub-app, plus ``doctor`` and ``demo``."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import winnow
from winnow.demo import CAPABILITIES

app = typer.Typer(
    name="winnow",
    help="Spend compute where the signal is: distill, route, search, explain.",
    no_args_is_help=True,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"winnow {winnow.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """winnow: on-policy distillation, batch LLM routing, distilled ranking, sound explanations."""


@app.command()
def doctor() -> None:
    """Show Python, torch, devices, installed extras and the data sets found."""
    from winnow.doctor import collect_checks

    table = Table(title=f"winnow {winnow.__version__}")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for check in collect_checks():
        status = "[green]ok[/green]" if check.ok else "[red]missing[/red]"
        table.add_row(escape(check.name), status, escape(check.detail))
    Console().print(table)


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
