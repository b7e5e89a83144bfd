"""First-stage retrieval: dense (FAISS), BM25 (bm25s) and their fusion, behind one interface.

Every retriever is fitted on a corpus and answers ``search(queries, k) -> (ids, scores)``:

Shape:
    ``ids``: ``[q, k]`` str document ids, best first. ``scores``: ``[q, k]`` float32, descending
    along each row. Always exactly ``k`` columns: slots beyond the documents available to a query
    hold id ``""`` and score ``-inf``.

- :class:`DenseRetriever`: inner product of normalised embeddings (cosine), exact with
  ``faiss.IndexFlatIP`` (the default, as in the reference design's exhaustive search) or
  approximate with ``faiss.IndexHNSWFlat`` under the inner-product metric. Queries are texts
  (embedded by its encoder) or a ``[q, d]`` float array.
- :class:`BM25Retriever`: Lucene BM25 over lower-cased word tokens without English stopwords,
  Snowball-stemmed when PyStemmer is installed (``stemmer="auto"``).
- :class:`HybridRetriever`: fuses the top ``candidates`` of several retrievers by reciprocal-rank
  fusion (:func:`reciprocal_rank_fusion`, ``rrf_k=60``) or by a weighted sum of per-query min-max
  normalised scores (:func:`interpolate_scores`).

Fusion functions are pure: they take ``(ids, scores)`` runs and return one.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Protocol, runtime_checkable

import numpy as np

from winnow.common.embeddings import DEFAULT_CACHE_DIR, Encoder, SentenceEncoder, encode_cached
from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = [
    "FUSIONS",
    "INDEXES",
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "interpolate_scores",
    "min_max_normalise",
    "reciprocal_rank_fusion",
    "stemmer_available",
]

logger = logging.getLogger(__name__)

Run = tuple[np.ndarray, np.ndarray]
_EMPTY_ID = ""


@runtime_checkable
class Retriever(Protocol):
    """Anything with ``search(queries, k) -> (ids [q, k] str, scores [q, k] float32)``."""

    def search(self, queries: Sequence[str] | np.ndarray, k: int) -> Run: ...


def _flat_index(dim: int, retriever: DenseRetriever):
    return require("faiss", "search").IndexFlatIP(dim)


def _hnsw_index(dim: int, retriever: DenseRetriever):
    faiss = require("faiss", "search")
    index = faiss.IndexHNSWFlat(dim, retriever.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = retriever.ef_construction
    index.hnsw.efSearch = retriever.ef_search
    return index


INDEXES: dict[str, Callable] = {"flat": _flat_index, "hnsw": _hnsw_index}


class DenseRetriever:
    """Nearest documents by inner product of embeddings, with a FAISS index.

    Args:
        encoder: embeds texts given to :meth:`fit` or :meth:`search`; ``None`` builds the
            default :class:`~winnow.common.embeddings.SentenceEncoder` (MiniLM) on first use.
            Not needed when both documents and queries come as arrays.
        index: ``"flat"`` (exact, ``IndexFlatIP``) or ``"hnsw"`` (``IndexHNSWFlat``, inner
            product; graph degree ``hnsw_m``, build beam ``ef_construction``, search beam
            ``ef_search``).
        cache_dir: embedding cache for texts (see :func:`~winnow.common.embeddings.encode_cached`);
            ``None`` disables it.

    Fitted attributes: ``doc_ids_`` (``[n]`` str array), ``index_`` (the FAISS index), ``dim_``.
    Embeddings should be L2-normalised so that scores are cosines; they are used as given.
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        index: str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        cache_dir=DEFAULT_CACHE_DIR,
    ):
        if index not in INDEXES:
            raise SearchInputError(
                f"index must be one of {sorted(INDEXES)}; got {index!r}; fix: index='flat' for "
                "exact search"
            )
        for name, value, low in (
            ("hnsw_m", hnsw_m, 2),
            ("ef_construction", ef_construction, 1),
            ("ef_search", ef_search, 1),
        ):
            if not isinstance(value, Integral) or value < low:
                raise SearchInputError(f"{name} must be an int >= {low}; got {value!r}")
        self.encoder = encoder
        self.index = index
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.cache_dir = cache_dir

    def fit(self, doc_ids: Sequence[str], docs: Sequence[str] | np.ndarray) -> DenseRetriever:
        """Index documents given as texts or as a ``[n, d]`` embedding matrix."""
        vectors = self._embed(docs, "docs")
        doc_ids = _as_ids(doc_ids, len(vectors))
        self.dim_ = vectors.shape[1]
        self.index_ = INDEXES[self.index](self.dim_, self)
        self.index_.add(vectors)
        self.doc_ids_ = doc_ids
        return self

    def search(self, queries: Sequence[str] | np.ndarray, k: int) -> Run:
        """Top ``k`` documents per query, by inner product (see the module doc for shapes)."""
        _check_fitted(self, "index_")
        _check_k(k)
        vectors = self._embed(queries, "queries")
        if vectors.shape[1] != self.dim_:
            raise SearchInputError(
                f"query embeddings have dimension {vectors.shape[1]}, the index {self.dim_}; "
                "fix: embed queries with the model that embedded the documents"
            )
        scores, positions = self.index_.search(vectors, k)
        return _ids_and_scores(self.doc_ids_, positions, scores)

    def _embed(self, items: Sequence[str] | np.ndarray, what: str) -> np.ndarray:
        if isinstance(items, np.ndarray) and items.dtype.kind == "f":
            if items.ndim != 2 or items.shape[0] == 0:
                raise SearchInputError(
                    f"{what} embeddings must be [n, d] with n >= 1; got shape {items.shape}"
                )
            return np.ascontiguousarray(items, dtype=np.float32)
        if self.encoder is None:
            self.encoder = SentenceEncoder()
        texts = list(items)
        if not texts:
            raise SearchInputError(f"{what} is empty; pass at least one text")
        return np.ascontiguousarray(
            encode_cached(self.encoder, texts, self.cache_dir, quiet=True, what=what)
        )


def stemmer_available() -> bool:
    """Whether PyStemmer (import name ``Stemmer``) is installed, for BM25 stemming."""
    return importlib.util.find_spec("Stemmer") is not None


class BM25Retriever:
    """BM25 ranking with bm25s.

    Args:
        k1, b: term-frequency saturation and length normalisation.
        method: bm25s scoring variant: ``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"``,
            ``"bm25+"``.
        stopwords: ``"en"`` or a list of words to drop, or ``None``.
        stemmer: ``"auto"`` (English Snowball stemming when PyStemmer is installed, none
            otherwise), ``"english"`` (requires PyStemmer) or ``None``.

    Fitted attributes: ``doc_ids_``, ``bm25_`` (the bm25s index), ``stemmer_`` (the stemmer's
    language or ``None``: what ``"auto"`` resolved to).
    """

    _METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | Sequence[str] | None = "en",
        stemmer: str | None = "auto",
    ):
        if not isinstance(k1, Real) or k1 < 0 or not isinstance(b, Real) or not 0 <= b <= 1:
            raise SearchInputError(f"need k1 >= 0 and 0 <= b <= 1; got k1={k1!r}, b={b!r}")
        if method not in self._METHODS:
            raise SearchInputError(f"method must be one of {self._METHODS}; got {method!r}")
        if stemmer not in ("auto", "english", None):
            raise SearchInputError(f"stemmer must be 'auto', 'english' or None; got {stemmer!r}")
        self.k1 = k1
        self.b = b
        self.method = method
        self.stopwords = stopwords
        self.stemmer = stemmer

    def fit(self, doc_ids: Sequence[str], docs: Sequence[str]) -> BM25Retriever:
        """Index document texts."""
        bm25s = require("bm25s", "search")
        texts = _as_texts(docs, "docs")
        self.doc_ids_ = _as_ids(doc_ids, len(texts))
        self.stemmer_, self._stem = _resolve_stemmer(self.stemmer)
        logger.info("BM25 stemming: %s", self.stemmer_ or "off (PyStemmer not installed)")
        tokens = self._tokenize(texts)
        if not any(tokens):
            raise SearchInputError(
                "no document has an indexable word (words of 2+ letters or digits, not "
                "stopwords); fix: check the texts passed as docs"
            )
        self.bm25_ = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self.bm25_.index(tokens, show_progress=False)
        return self

    def search(self, queries: Sequence[str], k: int) -> Run:
        """Top ``k`` documents per query text (see the module doc for shapes)."""
        _check_fitted(self, "bm25_")
        _check_k(k)
        tokens = self._tokenize(_as_texts(queries, "queries"))
        available = min(k, len(self.doc_ids_))
        positions, scores = self.bm25_.retrieve(tokens, k=available, show_progress=False)
        return _ids_and_scores(self.doc_ids_, positions, scores, width=k)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        bm25s = require("bm25s", "search")
        return bm25s.tokenize(
            texts,
            stopwords=self.stopwords,
            stemmer=self._stem,
            return_ids=False,
            show_progress=False,
        )


def reciprocal_rank_fusion(
    rankings: Sequence[np.ndarray],
    k: int,
    rrf_k: float = 60.0,
    weights: Sequence[float] | None = None,
) -> Run:
    """Fuse ranked id lists: ``score(d) = sum_i w_i / (rrf_k + rank_i(d))``, ranks from 1.

    Args:
        rankings: one ``[q, k_i]`` str id array per run, best first; ``""`` slots are ignored.
        k: width of the result.
        rrf_k: the damping constant (60 in Cormack et al. 2009).
        weights: per-run weights ``w_i``; default all 1.

    A document absent from a run gets nothing from it. Ties keep the order in which documents
    first appear, scanning the runs in turn. Returns ``(ids [q, k], scores [q, k])``.
    """
    _check_k(k)
    weights = _check_weights(weights, len(rankings))
    if rrf_k < 0:
        raise SearchInputError(f"rrf_k must be >= 0; got {rrf_k!r}")
    contributions = [
        (ids, np.broadcast_to(w / (rrf_k + np.arange(1, ids.shape[1] + 1)), ids.shape))
        for ids, w in zip(_check_runs(rankings), weights, strict=True)
    ]
    return _sum_and_rank(contributions, k)


def min_max_normalise(scores: np.ndarray) -> np.ndarray:
    """Per row, ``(s - min) / (max - min)`` over finite entries; ``-inf`` stays ``-inf``.

    A row whose finite scores are all equal maps to 0 (it carries no ranking signal).
    Shape: ``[q, k] -> [q, k]`` float32.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    normalised = np.where(span > 0, (scores - low) / safe, 0.0)
    return np.where(finite, normalised, -np.inf).astype(np.float32)


def interpolate_scores(runs: Sequence[Run], k: int, weights: Sequence[float] | None = None) -> Run:
    """Fuse runs by ``score(d) = sum_i w_i * minmax_i(d)``, ``minmax`` per query and run.

    Args:
        runs: ``(ids [q, k_i], scores [q, k_i])`` per run.
        k: width of the result.
        weights: per-run weights; default equal weights summing to 1. For a dense run and a
            BM25 run, ``weights=(alpha, 1 - alpha)``.

    A document absent from a run gets 0 from it (the normalised score of that run's last hit).
    Returns ``(ids [q, k], scores [q, k])``.
    """
    _check_k(k)
    weights = _check_weights(weights, len(runs), default=1.0 / max(len(runs), 1))
    _check_runs([ids for ids, _ in runs])
    contributions = [
        (np.asarray(ids), w * np.where(np.isfinite(norm), norm, 0.0))
        for (ids, scores), w in zip(runs, weights, strict=True)
        for norm in [min_max_normalise(scores)]
    ]
    return _sum_and_rank(contributions, k)


def _rrf(runs: Sequence[Run], k: int, retriever: HybridRetriever) -> Run:
    return reciprocal_rank_fusion([ids for ids, _ in runs], k, retriever.rrf_k, retriever.weights)


def _interpolate(runs: Sequence[Run], k: int, retriever: HybridRetriever) -> Run:
    return interpolate_scores(runs, k, retriever.weights)


FUSIONS: dict[str, Callable[[Sequence[Run], int, HybridRetriever], Run]] = {
    "rrf": _rrf,
    "interpolate": _interpolate,
}


class HybridRetriever:
    """Several fitted retrievers fused per query.

    Args:
        retrievers: fitted retrievers, each searched with the same ``queries`` (so texts when
            one of them is BM25).
        fusion: ``"rrf"`` or ``"interpolate"`` (see :data:`FUSIONS`).
        candidates: how many hits to take from each retriever before fusing (at least ``k``).
        rrf_k: RRF damping constant.
        weights: per-retriever weights; ``None`` = 1 each for RRF, equal and summing to 1 for
            interpolation.
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        fusion: str = "rrf",
        candidates: int = 100,
        rrf_k: float = 60.0,
        weights: Sequence[float] | None = None,
    ):
        if fusion not in FUSIONS:
            raise SearchInputError(f"fusion must be one of {sorted(FUSIONS)}; got {fusion!r}")
        if len(retrievers) < 1:
            raise SearchInputError("retrievers is empty; pass e.g. (bm25, dense)")
        _check_k(candidates)
        _check_weights(weights, len(retrievers))
        self.retrievers = list(retrievers)
        self.fusion = fusion
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.weights = None if weights is None else tuple(weights)

    def search(self, queries: Sequence[str], k: int) -> Run:
        """Top ``k`` fused documents per query (see the module doc for shapes)."""
        _check_k(k)
        depth = max(k, self.candidates)
        runs = [retriever.search(queries, depth) for retriever in self.retrievers]
        return FUSIONS[self.fusion](runs, k, self)


def _sum_and_rank(contributions: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> Run:
    n_queries = contributions[0][0].shape[0]
    out_ids = np.full((n_queries, k), _EMPTY_ID, dtype=object)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    for row in range(n_queries):
        totals: dict[str, float] = {}
        for ids, values in contributions:
            for doc, value in zip(ids[row], values[row], strict=True):
                if doc != _EMPTY_ID:
                    totals[doc] = totals.get(doc, 0.0) + float(value)
        ranked = sorted(totals.items(), key=lambda item: -item[1])[:k]  # stable: keeps ties
        for col, (doc, total) in enumerate(ranked):
            out_ids[row, col], out_scores[row, col] = doc, total
    return out_ids.astype(str), out_scores


def _ids_and_scores(
    doc_ids: np.ndarray, positions: np.ndarray, scores: np.ndarray, width: int | None = None
) -> Run:
    positions = np.asarray(positions)
    width = positions.shape[1] if width is None else width
    ids = np.full((positions.shape[0], width), _EMPTY_ID, dtype=doc_ids.dtype)
    out = np.full((positions.shape[0], width), -np.inf, dtype=np.float32)
    valid = positions >= 0
    columns = positions.shape[1]
    ids[:, :columns] = np.where(valid, doc_ids[np.clip(positions, 0, None)], _EMPTY_ID)
    out[:, :columns] = np.where(valid, scores, -np.inf)
    return ids, out


def _resolve_stemmer(choice: str | None):
    if choice is None or (choice == "auto" and not stemmer_available()):
        return None, None
    stemmer_module = require("Stemmer", "search")  # PyStemmer: pip install PyStemmer
    return "english", stemmer_module.Stemmer("english")


def _as_ids(doc_ids: Sequence[str], n: int) -> np.ndarray:
    ids = np.asarray([str(item) for item in doc_ids])
    if len(ids) != n:
        raise SearchInputError(f"got {len(ids)} doc_ids for {n} documents; pass one id per doc")
    if len(set(ids.tolist())) != n:
        raise SearchInputError("doc_ids must be unique")
    if _EMPTY_ID in set(ids.tolist()):
        raise SearchInputError("doc_ids must be non-empty strings ('' marks an empty slot)")
    return ids


def _as_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise SearchInputError(f"{what} must be a sequence of strings, not one string; wrap it")
    texts = list(texts)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise SearchInputError(f"{what} must be a non-empty sequence of strings")
    return texts


def _check_k(k: int) -> None:
    if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
        raise SearchInputError(f"k must be an int >= 1; got {k!r}")


def _check_fitted(retriever: object, attribute: str) -> None:
    if not hasattr(retriever, attribute):
        raise SearchInputError(
            f"{type(retriever).__name__} is not fitted; call .fit(doc_ids, docs) first"
        )


def _check_runs(rankings: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(ids) for ids in rankings]
    if not arrays or any(ids.ndim != 2 for ids in arrays):
        raise SearchInputError("pass at least one run, each an [n_queries, k] id array")
    if len({ids.shape[0] for ids in arrays}) != 1:
        raise SearchInputError(
            f"runs cover different numbers of queries: {[ids.shape[0] for ids in arrays]}"
        )
    return arrays


def _check_weights(
    weights: Sequence[float] | None, n_runs: int, default: float = 1.0
) -> tuple[float, ...]:
    if weights is None:
        return (default,) * n_runs
    weights = tuple(float(w) for w in weights)
    if len(weights) != n_runs or any(w < 0 for w in weights):
        raise SearchInputError(
            f"weights must be {n_runs} non-negative numbers, one per run; got {weights!r}"
        )
    return weights
