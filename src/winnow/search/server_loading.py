"""What the search server loads once at start-up: the index folder, its passages, summaries.

``winnow search index`` writes ``manifest.json`` (collection, encoder, index kind),
``index.faiss`` and ``doc_ids.json``. Each loader here checks what it reads, so a missing,
corrupt or mismatched file stops the start with one :class:`SavedArtifactError` line that names
the file and the fix, never a traceback from JSON, FAISS or the model libraries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow.common.embeddings import SentenceEncoder
from winnow.common.exceptions import WinnowError
from winnow.common.extras import require
from winnow.search.datasets import load_beir
from winnow.search.exceptions import SavedArtifactError, SearchInputError
from winnow.search.retrieve import INDEXES, DenseRetriever

__all__ = [
    "INDEX_COMMAND",
    "INDEX_FILES",
    "MANIFEST_KEYS",
    "cached_summaries",
    "load_passages",
    "load_retriever",
    "read_manifest",
]

INDEX_FILES = ("manifest.json", "index.faiss", "doc_ids.json")
INDEX_COMMAND = "winnow search index --config configs/search/msmarco.yaml"
MANIFEST_KEYS = ("dataset", "encoder", "index")
REBUILD = f"rebuild the index with `{INDEX_COMMAND}`"


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder/manifest.json`` as a dict holding every key of :data:`MANIFEST_KEYS`."""
    missing = [name for name in INDEX_FILES if not (folder / name).is_file()]
    if missing:
        raise SavedArtifactError(
            f"{folder} holds no search index (missing {', '.join(missing)}); build one with "
            f"`{INDEX_COMMAND} --set index_dir={folder}`"
        )
    path = folder / "manifest.json"
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise SavedArtifactError(
            f"{path} holds a JSON {type(manifest).__name__}, not an object; {REBUILD}"
        )
    absent = [key for key in MANIFEST_KEYS if key not in manifest]
    if absent:
        raise SavedArtifactError(f"{path} lacks {absent}; {REBUILD}")
    if manifest["index"] not in INDEXES:
        raise SavedArtifactError(
            f"{path}: index {manifest['index']!r} is not one of {sorted(INDEXES)}; {REBUILD}"
        )
    return manifest


def load_retriever(folder: Path, manifest: Mapping[str, Any], device: str) -> DenseRetriever:
    """The fitted retriever that ``build_index`` saved, with the encoder its manifest names.

    A probe query is embedded here, so an encoder that does not fit the index fails at start-up
    and the first request does not pay for loading the model.
    """
    index = _read_faiss(folder / "index.faiss")
    doc_ids = _read_doc_ids(folder / "doc_ids.json")
    if index.ntotal != len(doc_ids):
        raise SavedArtifactError(
            f"{folder}: index.faiss holds {index.ntotal} vectors, doc_ids.json {len(doc_ids)} "
            f"ids; {REBUILD}"
        )
    manifest_path = folder / "manifest.json"
    try:
        encoder = SentenceEncoder.from_name(manifest["encoder"], device)
        dim = encoder.encode(["warm-up query"]).shape[1]
    except (SearchInputError, OSError, ValueError) as error:
        raise SavedArtifactError(
            f"{manifest_path}: encoder {manifest['encoder']!r} does not load "
            f"({_first_line(error)}); install or download it, or {REBUILD}"
        ) from error
    if dim != index.d:
        raise SavedArtifactError(
            f"encoder {encoder.name!r} makes {dim}-d vectors but {folder} holds {index.d}-d "
            f"ones; {REBUILD}"
        )
    retriever = DenseRetriever(encoder=encoder, index=manifest["index"], cache_dir=None)
    retriever.index_, retriever.doc_ids_, retriever.dim_ = index, doc_ids, index.d
    return retriever


def load_passages(manifest: Mapping[str, Any], doc_ids: list[str], folder: Path) -> dict[str, str]:
    """``{doc id: text}`` of every indexed id, from the collection the manifest names."""
    dataset = manifest["dataset"]
    try:
        data = load_beir(dataset)
    except WinnowError as error:
        raise SavedArtifactError(
            f"{folder / 'manifest.json'} names collection {dataset!r}, which does not load: "
            f"{_first_line(error)}"
        ) from error
    unknown = sorted(set(doc_ids) - set(data.doc_ids))
    if unknown:
        raise SavedArtifactError(
            f"{folder} indexes ids missing from {dataset!r} ({unknown[:5]}); the collection "
            f"changed since, so {REBUILD}"
        )
    return {p.id: p.text for p in data.passages_of(doc_ids)}


def cached_summaries(
    folder: Path, passages: Mapping[str, str], max_tokens: int, count_tokens
) -> dict[str, str]:
    """``{doc id: summary}`` from ``folder/summaries-<max_tokens>.json``, made (and written
    atomically) on the first call; made again when the file's ids differ from ``passages`` or
    the file is not a JSON object of strings (it is a cache: remaking it is the fix)."""
    from winnow.common.runs import atomic_write_text
    from winnow.search.summaries import summarize

    path = folder / f"summaries-{max_tokens}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            stored = None
        if (
            isinstance(stored, dict)
            and stored.keys() == passages.keys()
            and all(isinstance(text, str) for text in stored.values())
        ):
            return stored
    ids = list(passages)
    texts = summarize([passages[i] for i in ids], max_tokens, count_tokens)
    made = dict(zip(ids, texts, strict=True))
    atomic_write_text(path, json.dumps(made))
    return made


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SavedArtifactError(f"{path} is not valid JSON ({error}); {REBUILD}") from error


def _read_doc_ids(path: Path) -> np.ndarray:
    doc_ids = _read_json(path)
    if not isinstance(doc_ids, list) or not all(isinstance(doc, str) for doc in doc_ids):
        raise SavedArtifactError(f"{path} must hold a JSON list of id strings; {REBUILD}")
    return np.asarray(doc_ids, dtype=str)


def _read_faiss(path: Path):
    faiss = require("faiss", "search")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        # FAISS reports "Error in <C++ function> at <file>.cpp:<line>: <problem>"
        problem = re.split(r"\.cpp:\d+: ", _first_line(error))[-1]
        raise SavedArtifactError(
            f"{path} is not a readable FAISS index, truncated or corrupt ({problem}); {REBUILD}"
        ) from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
