"""``winnow distill sft``: a competent teacher and a weaker student, trained with teacher forcing.

Each model trains with checkpoints (``--resume RUN_DIR`` continues a stopped run exactly), is
evaluated greedily on held-out problems and saved with its manifest; the report plots the
losses. ``sft_section`` trains into a given run, so the demo shares it.
"""

from __future__ import annotations

import copy
import random
from functools import partial
from pathlib import Path

from winnow.common.progress import track_progress
from winnow.common.provenance import Provenance, check_new_folder
from winnow.common.report import ReportSection, markdown_table
from winnow.common.resume import made_by_one_of, resume_chain
from winnow.common.runs import RunDir, run_section
from winnow.distill.config import SftConfig
from winnow.distill.evaluate import evaluate_greedy
from winnow.distill.jobs import check_task, configured_task
from winnow.distill.models import save_model

__all__ = ["run_sft", "sft_section"]


def sft_section(
    config: SftConfig, run: RunDir, quiet: bool = False, overwrite: bool = False
) -> ReportSection:
    """Train the teacher and the weaker student of ``config`` (the teacher only when
    ``student`` is null), save them, plot their losses; each step's loss and learning rate go
    to the run's metrics.jsonl. An existing model folder is refused before any training unless
    ``overwrite``."""
    from winnow.distill.checkpoints import resume_checkpoint, train_with_checkpoints
    from winnow.distill.models import char_tokenizer, load_model
    from winnow.distill.rollout import TransformersBackend
    from winnow.distill.sft import SupervisedTrainer

    roles = _check_model_folders(config, overwrite)
    specs = (config.teacher, config.student)
    starts = {s.init_from: load_model(s.init_from) for s in specs if s and s.init_from}
    tokenizer = (
        next(iter(starts.values()))[1]
        if starts
        else char_tokenizer(_alphabet(configured_task(config.task)))
    )
    task = configured_task(config.task, tokenizer)
    train = task.problems("train", config.task.train_problems, seed=config.seed)
    demonstrations = getattr(task, "demonstrations", None)
    if demonstrations is not None:  # targets that differ from the answers (verbose_addition)
        train = demonstrations("train", config.task.train_problems, seed=config.seed)
    test = task.problems("test", config.task.test_problems, seed=0)
    rows, curves = [], {}
    for role in roles:
        spec = getattr(config, role)
        model = _initial_model(spec, tokenizer, config.seed, starts)
        examples = _with_dropped_carries(config, train, spec.drop_carry, tokenizer)
        trainer = SupervisedTrainer(
            model, tokenizer, examples, spec.steps, spec.batch_size, spec.lr, config.seed
        )
        start = resume_checkpoint(config.resume_from, role) if config.resume_from else None
        if start is not None:
            trainer.load_checkpoint(start)
        with track_progress(f"SFT {role}", spec.steps, quiet) as bar:
            bar.advance(trainer.step)
            train_with_checkpoints(
                trainer,
                spec.steps,
                config.checkpoint_every,
                run.path / "checkpoints" / role,
                partial(_log_sft_step, run, bar, role),
                config.keep_checkpoints,
            )
        curves[role] = trainer.history
        backend = TransformersBackend(model, tokenizer)
        result = evaluate_greedy(backend, task, test, config.eval.max_new_tokens)
        folder = Path(config.output_dir) / role
        data = [(p.prompt, p.answer) for p in examples]
        made = Provenance(
            config, run, data=data, parents=[spec.init_from] if spec.init_from else []
        )
        save_model(
            model, tokenizer, folder, made, overwrite or _made_by_resumed_run(config, folder)
        )
        row = {
            "model": role,
            "parameters": sum(p.numel() for p in model.parameters()),
            "steps": spec.steps,
            "held-out accuracy": result.accuracy,
            "mean length": result.mean_length,
        }
        if hasattr(task, "instructed"):  # the same problems after the task's instruction
            instructed = task.instructed(test)
            result = evaluate_greedy(backend, task, instructed, config.eval.max_new_tokens)
            row |= {"instructed accuracy": result.accuracy, "instructed length": result.mean_length}
        rows.append(row | {"saved to": str(folder)})
    plot = run.save_plot(_sft_loss_plot(curves), "sft_loss")
    markdown = (
        "A teacher and a weaker student trained with teacher forcing on "
        f"`{config.task.label}`; greedy accuracy on {len(test)} held-out problems.\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![SFT loss](plots/{plot.name})\n"
    )
    return ReportSection(markdown, {row["model"]: row for row in rows})


def _log_sft_step(run: RunDir, bar, role: str, row: dict) -> None:
    bar.advance(1, loss=row["loss"])
    run.log_step(row["step"], model=role, **{k: v for k, v in row.items() if k != "step"})


def _initial_model(spec, tokenizer, seed: int, starts: dict):
    """A fresh model of ``spec.architecture``, or a copy of the loaded ``spec.init_from`` (in
    ``starts``: path -> (model, tokenizer)) to fine-tune."""
    from winnow.distill.models import build_tiny_model, check_same_tokenizer

    if spec.init_from is None:
        return build_tiny_model(spec.architecture, tokenizer, seed=seed)
    model, saved_tokenizer = starts[spec.init_from]
    check_same_tokenizer(tokenizer, saved_tokenizer)
    return copy.deepcopy(model)


def _with_dropped_carries(config: SftConfig, train: list, share: float, tokenizer) -> list:
    """``train`` with every carry dropped from the answers of a seeded random ``share`` of it."""
    if not share:
        return train
    wrong = configured_task(config.task.model_copy(update={"carry": False}), tokenizer)
    # Same seed, same operands: the carry flag changes the answers, not the draws.
    dropped = wrong.problems("train", config.task.train_problems, seed=config.seed)
    rng = random.Random(config.seed)
    return [w if rng.random() < share else c for c, w in zip(train, dropped, strict=True)]


def _check_model_folders(config: SftConfig, overwrite: bool) -> list[str]:
    """The roles ``config`` trains; raises if one's folder exists and ``overwrite`` is off,
    unless the run being resumed (or one it resumed) saved it: continuing replaces its own."""
    roles = [role for role in ("teacher", "student") if getattr(config, role) is not None]
    for role in roles:
        folder = Path(config.output_dir) / role
        check_new_folder(folder, overwrite or _made_by_resumed_run(config, folder))
    return roles


def _made_by_resumed_run(config: SftConfig, folder: Path) -> bool:
    """Whether a run of ``config.resume_from``'s chain saved the model in ``folder``."""
    return bool(config.resume_from) and made_by_one_of(folder, resume_chain(config.resume_from))


def run_sft(
    config: SftConfig, root: str | Path = "runs", quiet: bool = False, overwrite: bool = False
) -> Path:
    """``winnow distill sft``: train a teacher and a weaker student; save both; report.

    Existing model folders and a task that cannot be built are refused before the run folder is
    made, so a refused run leaves nothing behind."""
    _check_model_folders(config, overwrite)
    check_task(config.task)
    section = partial(sft_section, overwrite=overwrite)
    return run_section(
        "distill-sft", config, section, "distill sft", root, quiet, heading="winnow distill sft"
    )


def _sft_loss_plot(curves: dict[str, list[dict]]):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for role, rows in curves.items():
        axis.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=role, lw=1)
    axis.set(xlabel="step", ylabel="cross-entropy on answer tokens", yscale="log")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def _alphabet(task) -> str:
    """The characters of ``task`` for a character tokenizer, or the fix when it has none."""
    from winnow.distill.exceptions import DistillInputError

    alphabet = getattr(task, "alphabet", None)
    if not alphabet:
        raise DistillInputError(
            f"task {getattr(task, 'name', type(task).__name__)!r} has no alphabet, so no model "
            "can be built from scratch for it; fix: give the task class an alphabet (every "
            "character of its prompts and answers), or start from a pretrained model "
            "(teacher.init_from / student.init_from)"
        )
    return alphabet
