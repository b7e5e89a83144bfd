"""Checkpoints of the distill trainings and the runs that continue them (``--resume RUN_DIR``).

``winnow distill train`` saves each arm's checkpoints as ``<run>/checkpoints/<arm>/step-NNNNNN``,
``winnow distill sft`` each model's as ``<run>/checkpoints/<teacher|student>/step-NNNNNN``. The
trainers write ``trainer_state.json`` last, so a folder without it (a save cut short) is never
resumed, and older checkpoints are deleted only once a newer one is complete. A run that was
itself resumed holds only the checkpoints it wrote; for a part it did not reach, the run it
continued (``resume_from`` in its config.yaml) is asked in turn (:mod:`winnow.common.resume`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from winnow.common.resume import resume_chain
from winnow.distill.exceptions import DistillInputError

__all__ = [
    "STATE_FILE",
    "Checkpointable",
    "latest_checkpoint",
    "resume_checkpoint",
    "train_with_checkpoints",
]

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


class Checkpointable(Protocol):
    """A trainer that :func:`train_with_checkpoints` can drive."""

    step: int
    is_main_process: bool

    def train(self, until: int, on_step: Callable[[dict], None] | None = None) -> object: ...

    def save_checkpoint(self, path: str | Path) -> Path: ...


def train_with_checkpoints(
    trainer: Checkpointable,
    steps: int,
    every: int,
    folder: Path,
    on_step: Callable[[dict], None],
    keep: int | None,
) -> None:
    """Train to ``steps``, saving ``folder/step-N`` every ``every`` steps (0: only the last)
    and at the end; after each save only the newest ``keep`` complete checkpoints stay
    (``None``: all)."""
    every = every or steps
    while trainer.step < steps:
        target = min(steps, (trainer.step // every + 1) * every)
        trainer.train(target, on_step=on_step)
        trainer.save_checkpoint(folder / f"step-{trainer.step:06d}")
        if trainer.is_main_process and keep is not None:
            for old in _complete_checkpoints(folder)[:-keep]:
                shutil.rmtree(old)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete ``step-N`` checkpoint with the highest N in ``folder``; None if none."""
    complete = _complete_checkpoints(Path(folder))
    return complete[-1] if complete else None


def _complete_checkpoints(folder: Path) -> list[Path]:
    """The ``step-N`` folders in ``folder`` that hold a ``trainer_state.json``, by N."""
    if not folder.is_dir():
        return []
    complete = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _STEP.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return [path for _, path in sorted(complete)]


def resume_checkpoint(resume_from: str | Path, arm: str) -> Path | None:
    """What ``arm`` (or SFT role) continues from: ``resume_from`` itself when it is a checkpoint,
    else the latest checkpoint of ``arm`` in the run folder ``resume_from`` (or in the runs it
    resumed); None when the arm has none yet, so it starts fresh."""
    source = Path(resume_from)
    if (source / STATE_FILE).is_file():
        return source
    if not (source / "run.json").is_file():
        raise DistillInputError(
            f"resume_from {str(source)!r} is neither a checkpoint (no {STATE_FILE}) nor a run "
            "folder (no run.json); pass a run folder such as runs/distill-train-<timestamp>"
        )
    for run in resume_chain(source):
        if (run / STATE_FILE).is_file():
            return run  # that run continued one arm from a single checkpoint
        found = latest_checkpoint(run / "checkpoints" / arm)
        if found is not None:
            return found
    return None
