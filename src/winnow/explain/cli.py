"""``winnow explain``: S-LIME explanations and V-statistic forest intervals from a config."""

from __future__ import annotations

from pathlib import Path

import typer

from winnow.common.cli import (
    CONFIG_OPTION,
    OUT_OPTION,
    QUIET_OPTION,
    SET_OPTION,
    run_config_job,
)

app = typer.Typer(
    help="Trustworthy statistics for black-box models: S-LIME, V-statistic forests, and an "
    "explainable analysis of ridesourcing demand.",
    no_args_is_help=True,
)


def _run(job: str, config: Path | None, overrides: list[str] | None, out: Path, quiet: bool):
    from winnow.explain.jobs import JOBS, run_job

    run_config_job(
        JOBS[job][0], config, overrides, lambda s: run_job(job, s, root=out, quiet=quiet)
    )


@app.command()
def slime(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Explain rows of a table with S-LIME, repeatedly, and compare stability with fixed-n LIME."""
    _run("slime", config, overrides, out, quiet)


@app.command()
def forest(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fit a V-statistic forest and report predictions with confidence intervals."""
    _run("forest", config, overrides, out, quiet)


@app.command()
def demand(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Explain ridesourcing demand by feature family and spatial context (airport, downtown,
    neighbourhood), from shipped counts or raw portal trip files."""
    _run("demand", config, overrides, out, quiet)


@app.command()
def coverage(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Simulate training sets from known functions and report how often the V-forest's
    intervals cover (per variance variant, k, n and trees), beside forestci, MAPIE and
    quantile-forest where installed."""
    _run("coverage", config, overrides, out, quiet)
