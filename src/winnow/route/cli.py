"""``winnow route``: evaluate routers, solve one batch, fit a quality model, or serve the proxy."""

from __future__ import annotations

from pathlib import Path

import typer

from winnow.common.cli import (
    CONFIG_OPTION,
    OUT_OPTION,
    QUIET_OPTION,
    SET_OPTION,
    config_from_flags,
    run_config_job,
    user_errors,
)
from winnow.route.assign import DEFAULT_TIME_LIMIT

app = typer.Typer(
    help="Batch-level routing of LLM queries under cost, capacity and concurrency limits.",
    no_args_is_help=True,
)


@app.command("eval")
def evaluate(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Batch-level vs per-query routers on random, task-skewed and adversarial batch streams."""
    from winnow.route.jobs import RouteEvalConfig, run_route_eval

    run_config_job(
        RouteEvalConfig, config, overrides, lambda s: run_route_eval(s, root=out, quiet=quiet)
    )


@app.command()
def solve(
    batch: Path = typer.Argument(
        ...,
        help="CSV/Parquet: prompt, <model> = predicted quality, <model>|total_cost = cost in USD.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the assignment CSV."),
    budget: float = typer.Option(None, help="Total USD the batch may cost (default: no limit)."),
    capacity: list[str] = typer.Option(
        None, help="Per-model limit MODEL=COUNT (repeatable); unlisted models are unlimited."
    ),
    defer: bool = typer.Option(False, help="Defer the least valuable queries when infeasible."),
    drop_invalid: bool = typer.Option(
        False, help="Leave out rows with a missing or non-numeric quality or cost (counted)."
    ),
    time_limit: float = typer.Option(
        DEFAULT_TIME_LIMIT,
        help="Seconds for the solver; at the limit the best plan is written with its gap.",
    ),
    gap: float = typer.Option(
        1e-4, "--gap", help="Relative optimality gap to prove (0: the optimum; default 1e-4)."
    ),
) -> None:
    """Assign one batch of queries to models (exact MILP) and write one row per query.

    Ctrl-C stops the solve at once and writes nothing.
    """
    from winnow.route.solve import solve_batch_file

    try:
        with user_errors():
            summary = solve_batch_file(
                batch, output, budget, capacity or [], defer, time_limit, drop_invalid, gap
            )
    except KeyboardInterrupt:
        from winnow.common.interrupt import exit_now

        typer.echo("interrupted: no assignment written", err=True)
        exit_now(130)
    typer.echo(summary)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="YAML: proxy, prior_quality."),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Serve the OpenAI-compatible routing proxy (one process; Ctrl-C stops it)."""
    from winnow.route.proxy_config import ServeConfig
    from winnow.route.server import serve as run_server

    with user_errors():
        settings = config_from_flags(ServeConfig, config, overrides)
        quality = settings.quality_model()
    run_server(settings.proxy, quality, host=settings.host, port=settings.port)


@app.command()
def fit(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fit a quality model on routing data and save it for the proxy (proxy.quality_model)."""
    from winnow.route.fitted import RouteFitConfig, fit_quality_model, save_quality_model

    with user_errors():
        settings = config_from_flags(RouteFitConfig, config, overrides)
        fitted, manifest = fit_quality_model(settings, quiet)
        folder = save_quality_model(fitted, manifest, settings.output_dir)
    checked = manifest["validation"]
    typer.echo(
        f"fitted {settings.estimator.kind} on {settings.features.backend} features over "
        f"{len(fitted.models)} models ({manifest['data']['train_queries']} queries); validation: "
        f"mean Brier {checked['mean_brier']:.4f}, ECE {checked['mean_ece']:.4f}, routing by "
        f"argmax p_hat {checked['argmax_accuracy']:.3f} (best single model "
        f"{checked['best_single_model_accuracy']:.3f}); saved {folder}"
    )
