"""``winnow distill``: train a teacher/student pair, distil on-policy with TIP, evaluate."""

from __future__ import annotations

from pathlib import Path

import typer

from winnow.common.cli import (
    CONFIG_OPTION,
    OUT_OPTION,
    QUIET_OPTION,
    SET_OPTION,
    config_from_flags,
    config_or_resumed,
    run_config_job,
    user_errors,
)

OVERWRITE_OPTION = typer.Option(
    False, "--overwrite", help="Replace model folders that already exist (refused without)."
)

app = typer.Typer(
    help="On-policy distillation of LLMs (TIP token selection, Paced) and GRPO with ACE.",
    no_args_is_help=True,
)


RESUME_OPTION = typer.Option(
    None,
    "--resume",
    help="Continue the run in this folder from each arm's (or model's) latest checkpoint, with "
    "its config.yaml (--set still applies), into a new run folder.",
)


@app.command()
def sft(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    resume: Path | None = RESUME_OPTION,
) -> None:
    """Train a competent teacher and a weaker student on a synthetic task (CPU, minutes)."""
    from winnow.distill.config import SftConfig
    from winnow.distill.sft_job import run_sft

    with user_errors():
        settings = config_or_resumed(SftConfig, config, overrides, resume)
        report = run_sft(settings, out, quiet, overwrite=overwrite)
    if report is not None:
        typer.echo(f"report: {report}")


@app.command()
def train(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
    resume: Path | None = RESUME_OPTION,
) -> None:
    """Train one student per arm: distillation (TIP, Paced, OPSDC), GRPO with ACE, or the OPSA
    control; DDP-ready (the vLLM rollout backend is experimental: never run here)."""
    from winnow.distill.config import TrainConfig
    from winnow.distill.jobs import run_train

    with user_errors():
        settings = config_or_resumed(TrainConfig, config, overrides, resume)
        report = run_train(settings, out, quiet)
    if report is not None:
        typer.echo(f"report: {report}")


@app.command("eval")
def evaluate(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Greedy held-out accuracy of one model: --set model.path=runs/<run>/students/<arm>."""
    from winnow.distill.config import EvalJobConfig
    from winnow.distill.jobs import run_eval

    run_config_job(EvalJobConfig, config, overrides, lambda s: run_eval(s, root=out, quiet=quiet))


@app.command()
def check(
    config: Path = typer.Option(None, "--config", "-c", help="A train config (optional)."),
    overrides: list[str] = SET_OPTION,
    student: str | None = typer.Option(None, "--student", help="Sets student.path."),
    teacher: str | None = typer.Option(None, "--teacher", help="Sets teacher.path."),
) -> None:
    """Pre-flight checks of a student/teacher pair (also run at the start of every train)."""
    from winnow.distill.config import TrainConfig
    from winnow.distill.jobs import load_pair

    flags = list(overrides or [])
    for role, path in (("student", student), ("teacher", teacher)):
        if path is not None:
            flags.append(f"{role}.path={path}")
    checks: list[str] = []
    with user_errors():
        load_pair(config_from_flags(TrainConfig, config, flags), checks)
    for line in checks:
        typer.echo(f"ok  {line}")


@app.command()
def prune(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the pruned student."),
    model: str = typer.Option(
        "bundled:smollm2", "--model", help="Teacher: hub id, folder, or bundled:smollm2."
    ),
    gguf_file: str | None = typer.Option(None, "--gguf-file", help="GGUF file in --model."),
    keep: str | None = typer.Option(None, "--keep", help="Decoder layers to keep, e.g. 0,5,29."),
    layers: int | None = typer.Option(
        None, "--layers", help="How many layers to keep, evenly spaced with the first and last."
    ),
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Make a student by keeping some of a model's decoder layers (same tokenizer and head)."""
    from winnow.distill.exceptions import DistillInputError
    from winnow.distill.jobs import run_prune

    with user_errors():
        try:
            indices = None if keep is None else [int(i) for i in keep.split(",")]
        except ValueError:
            raise DistillInputError(
                f"--keep must be comma-separated layer indices, got {keep!r}; e.g. 0,5,29"
            ) from None
        typer.echo(run_prune(model, gguf_file, indices, layers, output, overwrite))
