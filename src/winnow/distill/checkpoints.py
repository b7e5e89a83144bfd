"""Finding the checkpoint a training continues from (``winnow distill train --resume RUN_DIR``).

A run saves each arm's checkpoints as ``<run>/checkpoints/<arm>/step-NNNNNN``. The trainer
writes ``trainer_state.json`` last, so a folder without it (a save cut short) is never resumed.
A run that was itself resumed holds only the checkpoints it wrote; for an arm it did not reach,
the run it continued (``resume_from`` in its config.yaml) is asked in turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from winnow.common.config import load_config
from winnow.distill.config import TrainConfig
from winnow.distill.exceptions import DistillInputError

__all__ = ["STATE_FILE", "latest_checkpoint", "resume_checkpoint", "resumed_config"]

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete ``step-N`` checkpoint with the highest N in ``folder``; None if none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _STEP.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(complete)[1] if complete else None


def resume_checkpoint(resume_from: str | Path, arm: str) -> Path | None:
    """What ``arm`` continues from: ``resume_from`` itself when it is a checkpoint, else the
    latest checkpoint of ``arm`` in the run folder ``resume_from`` (or in the runs it resumed);
    None when the arm has none yet, so it starts fresh."""
    source = Path(resume_from)
    if (source / STATE_FILE).is_file():
        return source
    if not (source / "run.json").is_file():
        raise DistillInputError(
            f"resume_from {str(source)!r} is neither a checkpoint (no {STATE_FILE}) nor a run "
            "folder (no run.json); pass a run folder such as runs/distill-train-<timestamp>"
        )
    seen: set[Path] = set()
    while source is not None and source.resolve() not in seen:
        seen.add(source.resolve())
        found = latest_checkpoint(source / "checkpoints" / arm)
        if found is not None:
            return found
        source = _resumed_from(source)
        if source is not None and (source / STATE_FILE).is_file():
            return source  # that run continued one arm from a single checkpoint
    return None


def resumed_config(run: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config that continues the run in folder ``run``: its own config.yaml, so the arms,
    models and seed match its checkpoints, with ``overrides`` (``--set steps=400`` trains
    further) and ``resume_from`` set to ``run`` (as JSON: a valid YAML scalar for any path)."""
    saved = Path(run) / "config.yaml"
    if not (Path(run) / "run.json").is_file() or not saved.is_file():
        raise DistillInputError(
            f"--resume {run}: not a run folder with a config.yaml; pass a folder written by "
            "winnow distill train, e.g. runs/distill-train-<timestamp> (see winnow runs)"
        )
    return load_config(TrainConfig, saved, [*overrides, f"resume_from={json.dumps(str(run))}"])


def _resumed_from(run: Path) -> Path | None:
    """The ``resume_from`` of the run in folder ``run``, if it still exists."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    earlier = config.get("resume_from") if isinstance(config, dict) else None
    return Path(earlier) if earlier and Path(earlier).is_dir() else None
