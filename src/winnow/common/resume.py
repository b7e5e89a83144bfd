"""Runs that continue earlier runs (``--resume RUN_DIR``): their config and their ancestry.

A resumed run is a new run folder whose config.yaml is the earlier run's, with the earlier
folder recorded under a ``resume_from`` key (``resume_from`` in distill, ``train.resume_from``
in search). A run that was itself resumed holds only what it made, so whatever it lacks is
looked up along the chain of runs it continued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml

from winnow.common.config import Config, load_config
from winnow.common.exceptions import ConfigError
from winnow.common.provenance import read_manifest

__all__ = ["made_by_one_of", "resume_chain", "resumed_config"]

ConfigT = TypeVar("ConfigT", bound=Config)


def resumed_config(
    config_class: type[ConfigT],
    run: str | Path,
    overrides: Sequence[str] = (),
    key: str = "resume_from",
) -> ConfigT:
    """The config that continues the run in folder ``run``: its own config.yaml, so models, data
    and seed match what it saved, with ``overrides`` (``--set steps=400`` trains further) and
    ``key`` set to ``run`` (as JSON: a valid YAML scalar for any path)."""
    saved = Path(run) / "config.yaml"
    if not (Path(run) / "run.json").is_file() or not saved.is_file():
        raise ConfigError(
            f"--resume {run}: not a run folder with a config.yaml; pass a folder written by "
            "the same command, e.g. runs/distill-train-<timestamp> (see winnow runs)"
        )
    return load_config(config_class, saved, [*overrides, f"{key}={json.dumps(str(run))}"])


def resume_chain(run: str | Path, key: str = "resume_from") -> list[Path]:
    """``run``, the run it resumed (``key`` in its config.yaml, dotted for a nested field), the
    one that run resumed, ... as long as they still exist."""
    chain: list[Path] = []
    source: Path | None = Path(run)
    while source is not None and source.resolve() not in {p.resolve() for p in chain}:
        chain.append(source)
        source = _resumed_from(source, key)
    return chain


def made_by_one_of(folder: str | Path, runs: Sequence[str | Path]) -> bool:
    """Whether the manifest in model ``folder`` names one of ``runs`` as the run that saved it:
    a resumed run may replace what the runs it continues saved, and nothing else."""
    manifest = read_manifest(folder) if Path(folder).is_dir() else None
    made_by = ((manifest or {}).get("run") or {}).get("folder")
    return made_by is not None and made_by in {str(Path(run).resolve()) for run in runs}


def _resumed_from(run: Path, key: str) -> Path | None:
    """The ``key`` of the config.yaml in folder ``run``, if that folder still exists."""
    try:
        value = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return Path(value) if isinstance(value, str) and Path(value).is_dir() else None
