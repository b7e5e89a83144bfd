"""What every capability's CLI shares: config loading from flags and clean failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError, WinnowError

__all__ = [
    "CONFIG_OPTION",
    "OUT_OPTION",
    "QUIET_OPTION",
    "SET_OPTION",
    "config_from_flags",
    "run_config_job",
    "user_errors",
]

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML config file; defaults apply without."
)
SET_OPTION = typer.Option(
    None,
    "--set",
    help="Override a config field, dotted when nested: --set seed=1, or in distill train "
    "--set optim.lr=1e-4 (repeatable).",
)
OUT_OPTION = typer.Option(Path("runs"), "--out", help="Folder that receives the run folder.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bars.")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn winnow's own errors into one red line and exit code 2, without a traceback.

    The line is never wrapped (``soft_wrap``), so logs and tests off a terminal see one line.
    """
    try:
        yield
    except WinnowError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from None


def config_from_flags(model: type[BaseModel], config: Path | None, overrides: list[str] | None):
    """Load ``model`` from ``--config`` and ``--set`` flags (raises ConfigError on bad input)."""
    return load_config(model, config, overrides or [])


def config_or_resumed(
    model: type[BaseModel],
    config: Path | None,
    overrides: list[str] | None,
    resume: Path | None,
    key: str = "resume_from",
):
    """The config from ``--config`` and ``--set``, or with ``--resume RUN_DIR`` that run's own
    config.yaml (``--set`` still applies) with ``key`` naming the run it continues."""
    from winnow.common.resume import resumed_config

    if resume is None:
        return config_from_flags(model, config, overrides)
    if config is not None:
        raise ConfigError(
            "--resume continues a run with its own config.yaml; drop --config and change "
            "fields with --set"
        )
    return resumed_config(model, resume, overrides or [], key)


def run_config_job(model: type[BaseModel], config: Path | None, overrides, job) -> None:
    """Load ``model`` from the flags, run ``job(settings) -> report path``, print the path."""
    with user_errors():
        report = job(config_from_flags(model, config, overrides))
    typer.echo(f"report: {report}")
