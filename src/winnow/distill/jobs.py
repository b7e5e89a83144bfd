"""The distill jobs behind the CLI: OPD training, layer pruning, evaluation (SFT: sft_job.py).

Each job composes the library parts (tasks, models, trainer, plots) and writes one run folder:
config, metrics, plots and a report. ``train_section`` trains every selector arm into a given
run and returns a report section, so ``winnow distill train`` and the demo share it.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from winnow.common.progress import track_progress
from winnow.common.provenance import Provenance, check_new_folder
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir
from winnow.distill.config import EvalJobConfig, TaskConfig, TrainConfig
from winnow.distill.evaluate import evaluate_greedy
from winnow.distill.models import save_model

__all__ = [
    "check_task",
    "configured_task",
    "load_pair",
    "run_eval",
    "run_train",
    "train_section",
]


def configured_task(config: TaskConfig, tokenizer=None):
    """The configured task: registered, your class by import path, or a JSONL file with its
    verifier; its prompts rendered by ``tokenizer``'s chat template when ``config.chat`` (left
    null: for a JSONL task whose tokenizer has a template)."""
    from winnow.distill.tasks import JsonlTask, build_task, load_reward
    from winnow.distill.tasks.chat import ChatTask
    from winnow.distill.tasks.registry import is_import_path

    if config.kind == "jsonl":
        verifier = config.verifier
        if is_import_path(verifier):
            verifier = load_reward(verifier, "task.verifier")
        fields = (config.prompt_field, config.answer_field)
        task = JsonlTask(config.path, *fields, verifier, config.pattern)
    else:
        task = build_task(config.name, **config.build_kwargs())
    chat = config.chat
    if chat is None:
        chat = config.kind == "jsonl" and bool(getattr(tokenizer, "chat_template", None))
    return ChatTask(task, tokenizer) if chat else task


def check_task(config: TaskConfig) -> None:
    """Build the task once (its chat rendering aside, which needs the model's tokenizer), so a
    bad import path, parameter or file is refused before any run folder or model exists."""
    configured_task(config.model_copy(update={"chat": False}))


def load_pair(config: TrainConfig, checks: list[str] | None = None):
    """Student, teacher and their shared tokenizer, after the pre-flight checks (a
    :class:`~winnow.distill.exceptions.PreflightError` when one fails; a
    :class:`~winnow.common.exceptions.ProvenanceError` when the student was made from the
    teacher's folder but it holds another model now); ``checks``, when given, receives one line
    per passed check."""
    from winnow.distill.models import check_lineage
    from winnow.distill.preflight import preflight

    check_lineage(config.student.path, config.teacher.path)
    student, tokenizer = config.student.load()
    teacher, teacher_tokenizer = config.teacher.load()
    prompts = [
        p.prompt for p in configured_task(config.task, tokenizer).problems("train", 5, seed=0)
    ]
    signal = config.divergence.kind_at(0) if config.objective == "opd" else config.objective
    lines = preflight(student, tokenizer, teacher, teacher_tokenizer, prompts, signal)
    if checks is not None:
        checks.extend(lines)
    return student, teacher, tokenizer


# -- train ----------------------------------------------------------------------------------------


def train_section(
    config: TrainConfig, run: RunDir | None, quiet: bool = False, accelerator=None
) -> ReportSection:
    """Train each arm of ``config`` from the same student; plots and report into ``run``.

    ``run`` is None on the non-main processes of a data-parallel launch: they train but write
    nothing except their share of each checkpoint.
    """
    from winnow.distill.checkpoints import resume_checkpoint, train_with_checkpoints
    from winnow.distill.plots import selection_scatter
    from winnow.distill.trainer import OnPolicyDistiller, make_accelerator

    task = None
    accelerator = accelerator or make_accelerator(config)
    checkpoints = _shared_folder(accelerator, run, "checkpoints")
    histories, scatters, checks = {}, {}, []
    for arm, selector in config.arms.items():
        first = not checks
        student, teacher, tokenizer = load_pair(config, checks)
        task = task or configured_task(config.task, tokenizer)
        if first and not quiet and run is not None:
            for line in checks:
                typer.echo(f"pre-flight: {line}", err=True)
        distiller = OnPolicyDistiller(
            student, teacher, tokenizer, task, config, selector, accelerator=accelerator
        )
        start = resume_checkpoint(config.resume_from, arm) if config.resume_from else None
        if start is not None:
            distiller.load_checkpoint(start)
        with track_progress(f"OPD {arm}", config.steps, quiet or run is None) as bar:
            bar.advance(distiller.step)

            def log(row: dict, arm: str = arm, bar=bar) -> None:
                if run is not None:
                    step, metrics = row["step"], {k: v for k, v in row.items() if k != "step"}
                    run.log_step(int(step), arm=arm, **metrics)
                if row["step"] > 0:
                    bar.advance(1, acc=row.get("eval_accuracy"), loss=row.get("loss"))

            train_with_checkpoints(
                distiller,
                config.steps,
                config.checkpoint_every,
                checkpoints / arm,
                log,
                config.keep_checkpoints,
            )
        histories[arm] = distiller.history
        if run is not None:
            parents = [config.student.path, config.teacher.path]
            made = Provenance(config, run, parents=parents)
            save_model(distiller.student, tokenizer, run.path / "students" / arm, made)
            if distiller.snapshot is not None:  # token statistics exist for OPD only
                stats, kept = distiller.snapshot
                scatters[arm] = run.save_plot(
                    selection_scatter(stats, kept, title=f"arm {arm}, first batch"),
                    f"selection_{arm}",
                )
        accelerator.free_memory()
    if run is None:
        return ReportSection("")
    return _train_report(config, run, histories, scatters, checks)


def _shared_folder(accelerator, run: RunDir | None, name: str) -> Path:
    """``run/name`` on the main process, told to every process (checkpoints are collective)."""
    from accelerate.utils import broadcast_object_list

    holder = [str(run.path / name) if run is not None else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder)
    return Path(holder[0])


def _final_row(history: list[dict]) -> dict:
    evals = [row for row in history if "eval_accuracy" in row]
    steps = [row for row in history if "kept_fraction" in row]

    def mean(key: str) -> float:
        return sum(row[key] for row in steps) / max(len(steps), 1)

    row = {
        "start accuracy": evals[0]["eval_accuracy"],
        "final accuracy": evals[-1]["eval_accuracy"],
        "best accuracy": max(row["eval_accuracy"] for row in evals),
        "start length": evals[0]["eval_mean_length"],
        "final length": evals[-1]["eval_mean_length"],
    }
    if steps:  # token selection statistics exist for OPD only
        row |= {
            "mean kept fraction": mean("kept_fraction"),
            "kept in Q3": mean("kept_quadrant_fraction_q3"),
            "loss mass Q3": mean("loss_mass_q3"),
        }
    return row


def _method_line(config: TrainConfig) -> str:
    if config.objective == "grpo":
        grpo = config.grpo
        return (
            f"GRPO on `{config.student.path}` (reference `{config.teacher.path}`, ACE alpha "
            f"{grpo.alpha_ace} {grpo.ace_form}, KL beta {grpo.kl_beta})"
        )
    if config.objective == "opsa":
        return (
            f"The OPSA control on `{config.student.path}`: advantage {config.opsa_advantage} on "
            "every sampled token, no teacher"
        )
    if config.teacher_instruction is not None:
        every, rate = config.teacher_refresh_every, config.teacher_update_rate
        update = (
            f"moved towards the student by {rate} after every step (EMA)"
            if rate is not None
            else f"refreshed from the student {f'every {every} steps' if every else 'never'}"
        )
        return (
            f"On-policy self-distillation (OPSDC) of `{config.student.path}`: the teacher "
            f"`{config.teacher.path}` reads `{config.teacher_instruction!r}` before each prompt "
            f"and is {update} (divergence `{config.divergence.kind}`)"
        )
    return (
        f"On-policy distillation of `{config.student.path}` towards `{config.teacher.path}` "
        f"(divergence `{config.divergence.kind}`)"
    )


def _train_report(config, run, histories, scatters, checks) -> ReportSection:
    from winnow.distill.plots import accuracy_curves, training_curves

    accuracy = run.save_plot(accuracy_curves(histories), "accuracy_vs_step")
    curves = run.save_plot(training_curves(histories), "training_curves")
    lengths = run.save_plot(_length_curves(histories), "length_vs_step")
    rows = [{"arm": arm, **_final_row(history)} for arm, history in histories.items()]
    summary = {row["arm"]: {k: v for k, v in row.items() if k != "arm"} for row in rows}
    markdown = "\n".join(
        [
            f"{_method_line(config)} on task `{config.task.label}` ({config.steps} steps of "
            f"{config.prompts_per_step} prompts). Each arm starts from the same student; "
            "accuracy is greedy on the same held-out problems.\n",
            markdown_table(rows, digits=3),
            f"\n![accuracy vs step](plots/{accuracy.name})\n",
            f"![training curves](plots/{curves.name})\n",
            "Mean response length (tokens, EOS included) of the greedy held-out answers:\n",
            f"![length vs step](plots/{lengths.name})\n",
            *(
                [
                    "Entropy x divergence of every response position in each arm's first "
                    "rollout batch (filled = kept, hollow = dropped):\n",
                    *(f"![selection {arm}](plots/{path.name})\n" for arm, path in scatters.items()),
                ]
                if scatters
                else []
            ),
            "Pre-flight checks of the student/teacher pair (all passed):\n",
            *(f"- {line}" for line in checks),
        ]
    )
    return ReportSection(markdown, summary)


def run_train(config: TrainConfig, root: str | Path = "runs", quiet: bool = False) -> Path | None:
    """``winnow distill train``: one run folder with every arm; returns the report path."""
    from winnow.distill.trainer import make_accelerator

    check_task(config.task)
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    run = RunDir("distill-train", root=root, seed=config.seed) if main else None
    # ``with run``: a failure or Ctrl-C is recorded in run.json, from the CLI or from Python
    with run or nullcontext():
        if run is not None:
            run.write_config(config)
        section = train_section(config, run, quiet, accelerator)
        if run is None:
            return None
        run.write_summary(section.summary)
        return run.write_report(f"# winnow distill train\n\n{section.markdown}", "distill train")


def run_prune(
    model: str,
    gguf_file: str | None,
    keep: list[int] | None,
    layers: int | None,
    output: Path,
    overwrite: bool = False,
) -> str:
    """``winnow distill prune``: a student from ``model`` with fewer decoder layers, saved as a
    normal folder beside its (identical) tokenizer, its manifest naming ``model`` as its parent;
    returns a one-line summary. An existing ``output`` is refused unless ``overwrite``."""
    from winnow.distill.exceptions import DistillInputError
    from winnow.distill.models import load_model
    from winnow.distill.pruning import evenly_spaced_layers, prune_layers

    if (keep is None) == (layers is None):
        raise DistillInputError("pass exactly one of --keep (layer indices) and --layers (count)")
    check_new_folder(output, overwrite)
    source, tokenizer = load_model(model, gguf_file=gguf_file)
    total = len(source.get_decoder().layers)
    kept = keep if keep is not None else evenly_spaced_layers(total, layers)
    pruned = prune_layers(source, kept)
    settings = {"model": model, "gguf_file": gguf_file, "keep": kept}
    save_model(pruned, tokenizer, output, Provenance(settings, parents=[model]), overwrite)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (source, pruned))
    return (
        f"kept decoder layers {kept} of {total}: {after / 1e6:.1f}M of {before / 1e6:.1f}M "
        f"parameters; saved {output}"
    )


def _length_curves(histories: dict[str, list[dict]]):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for arm, rows in histories.items():
        points = [(r["step"], r["eval_mean_length"]) for r in rows if "eval_mean_length" in r]
        axis.plot(*zip(*points, strict=True), marker="o", markersize=3, label=arm)
    axis.set(
        xlabel="optimizer step", ylabel="mean response length (tokens, greedy)", ylim=(0, None)
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


# -- eval -----------------------------------------------------------------------------------------


def run_eval(config: EvalJobConfig, root: str | Path = "runs", quiet: bool = False) -> Path:
    """``winnow distill eval``: greedy accuracy of one model on held-out problems."""
    from winnow.distill.rollout import TransformersBackend

    with RunDir("distill-eval", root=root, seed=0) as run:
        run.write_config(config)
        policy, tokenizer = config.model.load()
        task = configured_task(config.task, tokenizer)
        problems = task.problems("test", config.task.test_problems, seed=0)
        backend = TransformersBackend(policy, tokenizer)
        result = evaluate_greedy(
            backend, task, problems, config.eval.max_new_tokens, config.eval.batch_size
        )
        metrics = result.as_metrics()
        run.write_summary(metrics)
        rows = [{"metric": k, "value": v} for k, v in metrics.items()]
        markdown = (
            f"# winnow distill eval\n\n`{config.model.path}` on `{config.task.label}`, "
            f"{result.count} held-out problems, greedy decoding.\n\n"
            + markdown_table(rows, digits=4)
        )
        return run.write_report(markdown, "distill eval")
