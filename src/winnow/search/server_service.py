"""The search service: a dense index and an optional reranker, loaded once, answering queries.

:meth:`SearchService.search` answers a query over the indexed corpus (embed it, take the top
``max(k, rerank_depth)`` passages by inner product, let the reranker score the top
``rerank_depth``); :meth:`SearchService.rerank` scores documents a client sends (the
``/v1/rerank`` endpoint). The HTTP layer is :mod:`winnow.search.server`; what loads at start-up
is :mod:`winnow.search.server_loading`.

Model calls run one at a time under a lock: scoring is CPU-bound, so requests in parallel would
only split the same cores, and a fast tokenizer shared across threads can fail with "Already
borrowed".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from winnow.search.exceptions import SearchInputError
from winnow.search.retrieve import DenseRetriever
from winnow.search.server_loading import (
    cached_summaries,
    load_passages,
    load_retriever,
    read_manifest,
)

__all__ = ["Reranker", "SearchService", "cosine_relevance", "logit_relevance"]


@runtime_checkable
class Reranker(Protocol):
    """Anything with ``score(query, docs) -> [len(docs)] float`` (higher = better)."""

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray: ...


def logit_relevance(scores: np.ndarray) -> np.ndarray:
    """``[n]`` raw reranker scores -> ``[n]`` in ``[0, 1]``: ``sigmoid(s) = 1 / (1 + e^-s)``.

    Monotone, so the order is the reranker's; a probability only for a model trained with a
    logistic loss (the listwise students' scores are not calibrated: compare them within one
    request, not across requests).
    """
    scores = np.asarray(scores, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * scores))  # sigmoid, without overflow for large |s|


def cosine_relevance(query: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """``query [d]`` and ``docs [n, d]`` unit-norm embeddings -> ``[n]`` ``(cos + 1) / 2``,
    clipped to ``[0, 1]`` (rounding can step past it)."""
    return np.clip((np.asarray(docs, np.float64) @ np.asarray(query, np.float64) + 1) / 2, 0, 1)


class SearchService:
    """Dense retrieval, then optional reranking, over one loaded corpus.

    Args:
        retriever: a fitted :class:`~winnow.search.retrieve.DenseRetriever` whose ``encoder``
            embeds the queries.
        passages: ``{doc id: text}`` for every indexed id; the text hits return.
        reranker: rescores the top ``rerank_depth`` dense hits; ``None`` keeps the dense order.
        rerank_depth: dense hits the reranker reads per query (its cost grows linearly with it).
        rerank_texts: ``{doc id: text}`` the reranker reads instead of the passage (e.g.
            compressed summaries); ids without one fall back to the passage.
        max_text_chars: longer hit texts are cut to this many characters, ending in ``"…"``;
            ``None`` returns them whole.

    Build it once with :meth:`from_index`; :meth:`search` and :meth:`rerank` are safe to call
    from many threads.
    """

    def __init__(
        self,
        retriever: DenseRetriever,
        passages: Mapping[str, str],
        reranker: Reranker | None = None,
        *,
        rerank_depth: int = 30,
        rerank_texts: Mapping[str, str] | None = None,
        max_text_chars: int | None = 300,
    ):
        _check_settings(rerank_depth, max_text_chars)
        if not hasattr(retriever, "index_") or retriever.encoder is None:
            raise SearchInputError(
                "retriever must be a fitted DenseRetriever with an encoder; load one with "
                "SearchService.from_index(index_dir)"
            )
        missing = [doc for doc in retriever.doc_ids_.tolist() if doc not in passages]
        if missing:
            raise SearchInputError(f"passages lack the texts of indexed ids {missing[:5]}")
        if reranker is not None and not isinstance(reranker, Reranker):
            raise SearchInputError(
                f"reranker must have .score(query, docs); got {type(reranker).__name__}"
            )
        self.retriever = retriever
        self.passages = passages
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.rerank_texts = {} if rerank_texts is None else rerank_texts
        self.max_text_chars = max_text_chars
        self._lock = threading.Lock()

    @classmethod
    def from_index(
        cls,
        index_dir: str | Path,
        reranker_dir: str | Path | None = None,
        *,
        rerank_depth: int = 30,
        rerank_texts: Mapping[str, str] | None = None,
        max_text_chars: int | None = 300,
        device: str = "cpu",
        int8: bool = False,
        summary_tokens: int | None = None,
    ) -> SearchService:
        """Load a folder written by ``winnow search index`` and, if given, a saved reranker.

        ``manifest.json`` names the collection whose passages are served and the encoder. A
        missing, corrupt or mismatched file raises
        :class:`~winnow.search.exceptions.SavedArtifactError` naming it and the fix.

        The student's serving stack: ``int8`` quantises the reranker's linear layers
        (:func:`~winnow.search.rerank_stack.quantize_int8`); ``summary_tokens`` makes it read each
        passage's extractive summary of at most that many word pieces, computed once and kept
        in ``index_dir/summaries-<n>.json`` for later starts.
        """
        from winnow.search.rerank_stack import quantize_int8, word_piece_counter
        from winnow.search.reranking import load_ranker

        _check_settings(rerank_depth, max_text_chars)
        if summary_tokens is not None and (reranker_dir is None or rerank_texts is not None):
            raise SearchInputError(
                "summary_tokens needs a reranker (reranker_dir) and no rerank_texts; the "
                "summaries are what the reranker reads"
            )
        folder = Path(index_dir)
        manifest = read_manifest(folder)
        retriever = load_retriever(folder, manifest, device)
        passages = load_passages(manifest, retriever.doc_ids_.tolist(), folder)
        reranker = None if reranker_dir is None else load_ranker(reranker_dir, device=device).scorer
        if int8 and reranker is not None:
            reranker = quantize_int8(reranker)
        if summary_tokens is not None:
            rerank_texts = cached_summaries(
                folder, passages, summary_tokens, word_piece_counter(reranker)
            )
        return cls(
            retriever,
            passages,
            reranker,
            rerank_depth=rerank_depth,
            rerank_texts=rerank_texts,
            max_text_chars=max_text_chars,
        )

    def describe(self) -> dict[str, Any]:
        """What is loaded: passage count, encoder id, reranker class name and depth (or None)."""
        return {
            "passages": len(self.retriever.doc_ids_),
            "encoder": self.retriever.encoder.name,
            "reranker": None if self.reranker is None else type(self.reranker).__name__,
            "rerank_depth": None if self.reranker is None else self.rerank_depth,
        }

    def search(self, query: str, k: int = 10) -> dict[str, Any]:
        """The top ``k`` hits for ``query``, with scores and per-stage timings.

        Returns ``{"query", "hits", "timings_ms"}``. ``hits``: at most ``k`` (fewer when the
        index holds fewer passages) ``{"rank" (from 1), "doc_id", "text", "retrieval_score"
        (cosine), "rerank_score" (None when not reranked)}``, best first: reranked hits by
        rerank score, then the other dense hits by retrieval score. ``timings_ms``: float
        milliseconds of ``embed``, ``retrieve``, ``rerank`` (0 without a reranker), ``total``.
        """
        query = _check_query(query)
        _check_positive_int("k", k)
        start = time.perf_counter()
        with self._lock:
            vectors = self.retriever.encoder.encode([query])
            embedded = time.perf_counter()
            depth = k if self.reranker is None else max(k, self.rerank_depth)
            ids, scores = self.retriever.search(vectors, depth)
            retrieved = time.perf_counter()
            candidates = [
                (str(doc), float(s)) for doc, s in zip(ids[0], scores[0], strict=True) if doc
            ]
            head = [doc for doc, _ in candidates[: self.rerank_depth]]
            rerank_scores = self._rerank_scores(
                query, [self.rerank_texts.get(doc, self.passages[doc]) for doc in head]
            )
            reranked = time.perf_counter()
        hits = self._hits(candidates, rerank_scores, k)
        timings = {
            "embed": embedded - start,
            "retrieve": retrieved - embedded,
            "rerank": reranked - retrieved,
            "total": time.perf_counter() - start,
        }
        return {
            "query": query,
            "hits": hits,
            "timings_ms": {name: round(1000 * s, 3) for name, s in timings.items()},
        }

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[dict[str, Any]]:
        """Score client documents against ``query``, best first (the ``/v1/rerank`` scores).

        Returns ``min(top_n, len(documents))`` (all when ``top_n`` is None) ``{"index" (into
        documents), "relevance_score" (float in [0, 1])}``, by score descending; ties keep the
        input order. The score is the reranker's raw score through a sigmoid
        (:func:`logit_relevance`); without a reranker it is the cosine of the query's and the
        document's embeddings mapped to ``(cos + 1) / 2`` (:func:`cosine_relevance`), so a
        client always gets a ``[0, 1]`` score whose order is the model's.
        """
        query = _check_query(query)
        if isinstance(documents, str) or not documents:
            raise SearchInputError("documents must be a non-empty list of strings")
        documents = list(documents)
        if not all(isinstance(doc, str) for doc in documents):
            raise SearchInputError("documents must be strings")
        if top_n is not None:
            _check_positive_int("top_n", top_n)
        with self._lock:
            if self.reranker is None:
                vectors = self.retriever.encoder.encode([query, *documents])
                relevance = cosine_relevance(vectors[0], vectors[1:])
            else:
                relevance = logit_relevance(self._rerank_scores(query, documents))
        order = np.argsort(-relevance, kind="stable")[:top_n]
        return [{"index": int(i), "relevance_score": float(relevance[i])} for i in order]

    def _rerank_scores(self, query: str, texts: list[str]) -> np.ndarray:
        """``[len(texts)]`` float64 raw reranker scores; empty without a reranker."""
        if self.reranker is None or not texts:
            return np.zeros(0)
        scores = np.asarray(self.reranker.score(query, texts), dtype=np.float64).reshape(-1)
        if scores.shape != (len(texts),) or not np.isfinite(scores).all():
            raise SearchInputError(
                f"{type(self.reranker).__name__}.score returned {scores.shape[0]} scores for "
                f"{len(texts)} docs, or non-finite ones; it must return one finite score per doc"
            )
        return scores

    def _hits(
        self, candidates: list[tuple[str, float]], rerank_scores: np.ndarray, k: int
    ) -> list[dict[str, Any]]:
        ranked = [
            (*candidates[i], float(rerank_scores[i]))
            for i in np.argsort(-rerank_scores, kind="stable")
        ]
        ranked += [(doc, score, None) for doc, score in candidates[len(rerank_scores) :]]
        return [
            {
                "rank": rank,
                "doc_id": doc,
                "text": self._text(doc),
                "retrieval_score": score,
                "rerank_score": rerank_score,
            }
            for rank, (doc, score, rerank_score) in enumerate(ranked[:k], start=1)
        ]

    def _text(self, doc_id: str) -> str:
        text = self.passages[doc_id]
        if self.max_text_chars is None or len(text) <= self.max_text_chars:
            return text
        return text[: self.max_text_chars - 1] + "…"


def _check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise SearchInputError(f"query must be a non-blank string; got {query!r}")
    return query.strip()


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise SearchInputError(f"{name} must be an int >= 1; got {value!r}")


def _check_settings(rerank_depth: int, max_text_chars: int | None) -> None:
    _check_positive_int("rerank_depth", rerank_depth)
    if max_text_chars is not None:
        _check_positive_int("max_text_chars", max_text_chars)
