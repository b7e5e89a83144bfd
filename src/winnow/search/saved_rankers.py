"""Where ``winnow search train`` puts its final models: ``train.output_dir``, checked before any
training (``--overwrite``; a resumed run may replace what the runs it continues saved), each
model saved at once with a manifest naming its run, training data and parents (teachers first,
so every student's manifest names the very teachers beside it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from winnow.common.exceptions import ModelFolderExistsError
from winnow.common.provenance import Provenance, save_model_folder
from winnow.common.resume import made_by_one_of, resume_chain
from winnow.search.config import SearchConfig
from winnow.search.llm_teacher import LLMRelevanceTeacher
from winnow.search.ranker import StudentRanker
from winnow.search.reranking import saved_model_folders

__all__ = ["check_output_dir", "resumed_runs", "save_rankers", "training_data_identity"]


def check_output_dir(config: SearchConfig, overwrite: bool) -> None:
    """Raise :class:`~winnow.common.exceptions.ModelFolderExistsError` when
    ``train.output_dir`` already holds saved rerankers and ``overwrite`` is off (those that
    the run being resumed, or one it continued, saved may be replaced)."""
    output = Path(config.train.output_dir)
    mine = resumed_runs(config)
    existing = [
        folder.name for folder in saved_model_folders(output) if not made_by_one_of(folder, mine)
    ]
    if existing and not overwrite:
        raise ModelFolderExistsError(
            f"train.output_dir {output} already holds saved rerankers ({', '.join(existing)}); "
            "pass --overwrite to replace them, or --set train.output_dir=<another folder>"
        )


def save_rankers(
    rankers: dict, output: Path, provenance: Provenance, overwrite: bool = False
) -> dict[str, str]:
    """Save each trained ranker in ``output/<name>`` with its manifest (``provenance``, and the
    models it was trained from as parents). Teachers go first, so that each student's manifest
    records the teachers saved beside it. Served variants (``name+int8``) are not saved:
    ``winnow search serve --int8`` makes them from the saved model at start-up."""
    saved = {}
    ordered = sorted(rankers.items(), key=lambda item: isinstance(item[1], StudentRanker))
    for name, ranker in ordered:
        if "+" not in name:
            made = dataclasses.replace(provenance, parents=_parents(ranker, output))
            saved[name] = str(save_model_folder(output / name, ranker.save, made, overwrite))
    return saved


def resumed_runs(config: SearchConfig) -> list[Path]:
    """The run ``train.resume_from`` continues and the runs that one continued; [] if none."""
    resumed = config.train.resume_from
    return resume_chain(resumed, key="train.resume_from") if resumed else []


def training_data_identity(config: SearchConfig, training) -> dict:
    """What identifies the saved models' training data: the collection, the judged queries
    that trained and chose settings, their qrels, and every query's dense candidates."""
    queries = [*training.split.train, *training.split.dev]
    qrels = {qid: training.data.qrels.get(qid, {}) for qid in queries}
    return {
        "collection": config.data.name,
        "queries": queries,
        "qrels": qrels,
        "candidates": training.candidates,
    }


def _parents(ranker, output: Path) -> list[str]:
    """What ``ranker`` was trained from: its base checkpoint and, for a student, the teachers
    saved beside it in ``output``."""
    if isinstance(ranker, StudentRanker):
        teachers = [str(output / f"{name}_teacher") for name in ranker.teachers_]
        return [ranker.network_.model_location(), *teachers]
    if isinstance(ranker, LLMRelevanceTeacher):
        return [ranker.model_location()[0]]
    return [ranker.model_location()]
