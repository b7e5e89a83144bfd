"""Saved rerankers in use: find them in a folder, and rerank a first stage's top candidates.

``winnow search train`` saves each teacher and student in its own folder under
``train.output_dir``; ``winnow search eval``, the server and the benchmarks load them from
there with :func:`load_rankers`, which refuses a student whose teachers beside it are not the
ones it was distilled from (each folder's ``winnow-manifest.json`` records its parents; see
:mod:`winnow.common.provenance`). :func:`rerank_depth` reorders the first ``depth`` candidates
of each query and keeps the rest of the first-stage order behind them, so recall at deeper
cut-offs is that of the first stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.common.extras import require
from winnow.common.inputs import read_json_object
from winnow.common.provenance import check_parents
from winnow.search.cross_encoder import TEACHER_FILE, CrossEncoderTeacher
from winnow.search.datasets import BeirDataset
from winnow.search.exceptions import SavedArtifactError
from winnow.search.llm_teacher import TEACHER_FILE as LLM_TEACHER_FILE
from winnow.search.llm_teacher import LLMRelevanceTeacher
from winnow.search.ranker import STUDENT_FILE, StudentRanker

__all__ = [
    "RerankTiming",
    "SavedRanker",
    "load_ranker",
    "load_rankers",
    "rerank",
    "rerank_depth",
    "saved_model_folders",
]

MODEL_CONFIG = "config.json"
RECORDS = (STUDENT_FILE, TEACHER_FILE, LLM_TEACHER_FILE)  # what `search train` writes per model
TRAIN_AGAIN = "train it again (`winnow search train`) or pass another folder"
MIXED_RUNS = (
    "the folder mixes models of two `winnow search train` runs (one stopped after saving its "
    "teachers?); run `winnow search train --overwrite` so that they come from one run, or "
    "delete the student if that run does not train it"
)


@dataclass(frozen=True)
class SavedRanker:
    """A reranker loaded from ``path``: a teacher, an LLM teacher or a student, and its fitted
    scorer."""

    name: str
    path: Path
    kind: str
    scorer: CrossEncoderTeacher | StudentRanker | LLMRelevanceTeacher

    def describe(self) -> dict:
        """Path, kind and the settings that set its cost: layers and input length (passage
        tokens for an LLM teacher)."""
        student = self.kind == "student"
        if self.kind == "llm_teacher":
            layers = self.scorer.model_.config.num_hidden_layers
            length = self.scorer.max_passage_tokens
        else:
            cross_encoder = self.scorer.network_.model_ if student else self.scorer.model_
            layers = cross_encoder.model.config.num_hidden_layers
            length = self.scorer.max_length
        record = {"path": str(self.path), "kind": self.kind, "layers": layers, "max_length": length}
        if student:
            record["teacher_weights"] = self.scorer.teacher_weights
        return record


@dataclass(frozen=True)
class RerankTiming:
    """Pairs scored and the wall seconds it took (tokenising and forward passes)."""

    pairs: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


def load_ranker(
    path: str | Path, num_threads: int | None = None, device: str = "cpu"
) -> SavedRanker:
    """The student saved in ``path`` (it holds ``winnow_student.json``), the LLM teacher
    (``winnow_llm_teacher.json``), or else the teacher or any other cross-encoder folder there.
    ``num_threads=None`` keeps the process's setting.

    A folder that is not one model (missing, the parent of several models, no
    ``config.json``) or whose files do not load (corrupt JSON, truncated weights) raises a
    :class:`~winnow.search.exceptions.SavedArtifactError` naming the folder or file and the fix;
    a student whose teachers beside it are not the ones it was distilled from raises a
    :class:`~winnow.common.exceptions.ProvenanceError` naming both.
    """
    path = Path(path)
    _check_model_folder(path)
    check_parents(path, fix=MIXED_RUNS)
    settings = {"num_threads": num_threads, "device": device, "quiet": True}
    if (path / STUDENT_FILE).is_file():
        kind, load = "student", StudentRanker.load
    elif (path / LLM_TEACHER_FILE).is_file():
        kind, load = "llm_teacher", LLMRelevanceTeacher.load
    else:
        kind, load = "teacher", CrossEncoderTeacher.load
    try:
        scorer = load(path, **settings)
    except _load_failures() as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise SavedArtifactError(
            f"the {kind} in {path} does not load ({type(error).__name__}: {reason}); the folder "
            f"is damaged or incomplete: {TRAIN_AGAIN}"
        ) from error
    return SavedRanker(path.name, path, kind, scorer)


def load_rankers(folder: str | Path, num_threads: int | None = None) -> dict[str, SavedRanker]:
    """Every reranker saved in a subfolder of ``folder``, by folder name; ``{}`` if none."""
    folders = saved_model_folders(folder)
    for child in folders:  # a mixed set is refused before any model loads
        check_parents(child, fix=MIXED_RUNS)
    return {child.name: load_ranker(child, num_threads) for child in folders}


def saved_model_folders(folder: str | Path) -> list[Path]:
    """The subfolders of ``folder`` that hold a saved teacher or student, sorted; ``[]`` if
    ``folder`` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        child
        for child in folder.iterdir()
        if not child.name.startswith(".")  # a save in progress, or one a crash left behind
        and any((child / n).is_file() for n in RECORDS)
    )


def _check_model_folder(path: Path) -> None:
    """Raise unless ``path`` is one model's folder whose JSON files parse."""
    if not path.is_dir():
        raise SavedArtifactError(
            f"reranker folder {path} not found; pass one that `winnow search train` wrote "
            "under train.output_dir (or StudentRanker.save / CrossEncoderTeacher.save)"
        )
    if not (path / MODEL_CONFIG).is_file() and not (path / LLM_TEACHER_FILE).is_file():
        models = sorted(child.name for child in path.iterdir() if _holds_model(child))
        if len(models) > 1:
            raise SavedArtifactError(
                f"{path} holds several models: {', '.join(models)}; pass one of them, e.g. "
                f"{path / models[0]}"
            )
        if models:
            raise SavedArtifactError(
                f"{path} holds one model, {models[0]}; pass {path / models[0]}"
            )
        raise SavedArtifactError(
            f"{path} is not a model folder (no {MODEL_CONFIG}); pass one that `winnow search "
            "train` wrote under train.output_dir (or StudentRanker.save / CrossEncoderTeacher.save)"
        )
    for name in (MODEL_CONFIG, *RECORDS):
        file = path / name
        if not file.is_file():
            continue
        read_json_object(file, SavedArtifactError, f"the folder is damaged: {TRAIN_AGAIN}")


def _load_failures() -> tuple[type[Exception], ...]:
    """What a damaged model folder raises while loading: file, JSON, config, weight errors."""
    safetensors = require("safetensors", "search")
    return (OSError, ValueError, KeyError, TypeError, RuntimeError, safetensors.SafetensorError)


def _holds_model(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in (MODEL_CONFIG, *RECORDS))


def rerank(
    scorer: CrossEncoderTeacher, data: BeirDataset, query_ids: Sequence[str], ranked_ids
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each query's candidates by ``scorer.score``.

    Shape: ``ranked_ids [q, k]`` str (``""`` slots stay last) -> ``(ids [q, k] str,
    scores [q, k] float32)``, best first; empty slots hold ``""`` and ``-inf``.
    """
    ranked_ids = np.asarray(ranked_ids)
    subset = data.with_queries(query_ids)
    ids = np.full(ranked_ids.shape, "", dtype=object)
    scores = np.full(ranked_ids.shape, -np.inf, dtype=np.float32)
    for row, (text, candidates) in enumerate(zip(subset.query_texts, ranked_ids, strict=True)):
        passages = data.passages_of(doc for doc in candidates.tolist() if doc != "")
        values = scorer.score(text, passages)
        order = np.argsort(-values, kind="stable")
        ids[row, : len(order)] = [passages[i].id for i in order]
        scores[row, : len(order)] = values[order]
    return ids.astype(str), scores


def rerank_depth(
    scorer, data: BeirDataset, query_ids: list[str], ranked_ids: np.ndarray, depth: int
) -> tuple[np.ndarray, RerankTiming]:
    """Rerank the first ``depth`` of each ``[q, K]`` id row; the rest keep their order.

    Returns ``ids [q, K]`` and the timing of the scoring. ``data`` supplies the texts the
    scorer reads (pass a summarised copy to serve compressed item text).
    """
    ranked_ids = np.asarray(ranked_ids)
    head, tail = ranked_ids[:, :depth], ranked_ids[:, depth:]
    start = time.perf_counter()
    reordered, _ = rerank(scorer, data, query_ids, head)
    seconds = time.perf_counter() - start
    pairs = int((head != "").sum())
    return np.concatenate([reordered, tail], axis=1), RerankTiming(pairs, seconds)
