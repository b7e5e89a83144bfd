"""The search API: a dense index and an optional reranker, loaded once, answering over HTTP.

``winnow search eval`` measures the pipeline offline; this module serves the same pipeline to
clients, so the index, the passages and the models load once per process, not per request.

Endpoints (fastapi):

- ``GET /health``: ``{"status": "ok", "passages", "encoder", "reranker", "rerank_depth"}``.
- ``GET /search?q=...&k=...``: ``q`` holds 1 to ``max_query_chars`` characters and is not blank;
  ``k`` is an int in ``[1, max_k]``, default 10. The answer is :meth:`SearchService.search`'s.

A parameter out of bounds gets FastAPI's 422, whose ``detail`` names it (``["query", "k"]``) and
the limit; a query string longer than ``q`` could ever need when percent-encoded a 414 before
parsing; an unknown route a 404; a failure inside the service a 500 with a one-line JSON
``detail`` (the traceback goes to the server log only).

Per query: embed it (:class:`~winnow.search.embed.Encoder`), take the top ``max(k,
rerank_depth)`` passages by inner product (FAISS), let the reranker score the top
``rerank_depth`` (reading ``rerank_texts`` where given, e.g. compressed summaries), and return
the reranked hits by rerank score followed by the remaining dense hits, ``k`` in all.

Model calls run one query at a time under a lock: scoring is CPU-bound, so requests in parallel
would only split the same cores, and a fast tokenizer shared across threads can fail with
"Already borrowed". :func:`serve` sets the process's torch and FAISS thread counts once.
"""

import json
import threading
import time
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import AfterValidator

from winnow.common.extras import require
from winnow.search.datasets import load_beir
from winnow.search.embed import Encoder
from winnow.search.exceptions import SearchInputError
from winnow.search.retrieve import DenseRetriever

__all__ = ["INDEX_FILES", "Reranker", "SearchService", "cached_summaries", "create_app", "serve"]

INDEX_FILES = ("manifest.json", "index.faiss", "doc_ids.json")
INDEX_COMMAND = "winnow search index --config configs/search/msmarco.yaml"
MANIFEST_KEYS = ("dataset", "encoder", "index")


@runtime_checkable
class Reranker(Protocol):
    """Anything with ``score(query, docs) -> [len(docs)] float`` (higher = better)."""

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray: ...


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

    Build it once with :meth:`from_index`; :meth:`search` is safe to call from many threads.
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
    ) -> "SearchService":
        """Load a folder written by ``winnow search index`` and, if given, a saved reranker.

        ``manifest.json`` names the collection whose passages are served and the encoder; a
        probe query is embedded here, so an encoder that does not fit the index fails at load
        and the first request does not pay for loading the model.

        The student's serving stack: ``int8`` quantises the reranker's linear layers
        (:func:`~winnow.search.stack.quantize_int8`); ``summary_tokens`` makes it read each
        passage's extractive summary of at most that many word pieces, computed once and kept
        in ``index_dir/summaries-<n>.json`` for later starts.
        """
        from winnow.search.reranking import load_ranker
        from winnow.search.stack import quantize_int8, word_piece_counter

        _check_settings(rerank_depth, max_text_chars)
        folder = Path(index_dir)
        manifest = _read_manifest(folder)
        retriever = _load_retriever(folder, manifest, device)
        passages = _passages(manifest["dataset"], retriever.doc_ids_.tolist(), folder)
        reranker = None if reranker_dir is None else load_ranker(reranker_dir, device=device).scorer
        if int8 and reranker is not None:
            reranker = quantize_int8(reranker)
        if summary_tokens is not None:
            if reranker is None or rerank_texts is not None:
                raise SearchInputError(
                    "summary_tokens needs a reranker (reranker_dir) and no rerank_texts; the "
                    "summaries are what the reranker reads"
                )
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
            "encoder": self.retriever.encoder.cache_id,
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
            vectors = self.retriever.encoder.encode([query], quiet=True)
            embedded = time.perf_counter()
            depth = k if self.reranker is None else max(k, self.rerank_depth)
            ids, scores = self.retriever.search(vectors, depth)
            retrieved = time.perf_counter()
            candidates = [
                (str(doc), float(s)) for doc, s in zip(ids[0], scores[0], strict=True) if doc
            ]
            rerank_scores = self._rerank(query, [doc for doc, _ in candidates])
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

    def _rerank(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """``[min(rerank_depth, len(doc_ids))]`` float64 scores of the leading ids."""
        if self.reranker is None or not doc_ids:
            return np.zeros(0)
        head = doc_ids[: self.rerank_depth]
        texts = [self.rerank_texts.get(doc, self.passages[doc]) for doc in head]
        scores = np.asarray(self.reranker.score(query, texts), dtype=np.float64).reshape(-1)
        if scores.shape != (len(head),) or not np.isfinite(scores).all():
            raise SearchInputError(
                f"{type(self.reranker).__name__}.score returned {scores.shape[0]} scores for "
                f"{len(head)} docs, or non-finite ones; it must return one finite score per doc"
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


def create_app(service: SearchService, max_query_chars: int = 512, max_k: int = 100):
    """The API over an already loaded ``service`` (see the module doc); a ``fastapi.FastAPI``.

    ``app.state.service`` holds the service; every request uses it, nothing is loaded per
    request.
    """
    fastapi = require("fastapi", "serve")
    _check_positive_int("max_query_chars", max_query_chars)
    _check_positive_int("max_k", max_k)
    query_param = Annotated[
        str,
        fastapi.Query(
            min_length=1, max_length=max_query_chars, description="the query text, not blank"
        ),
        AfterValidator(_not_blank),
    ]
    k_param = Annotated[int, fastapi.Query(ge=1, le=max_k, description="hits to return")]
    default_k = min(10, max_k)

    # Each character is at most 4 UTF-8 bytes, each percent-encoded as 3; the rest is for k.
    max_query_string = 12 * max_query_chars + 64

    app = fastapi.FastAPI(title="winnow search")
    app.state.service = service

    @app.middleware("http")
    async def bounded_query_string(request, call_next):
        if len(request.scope["query_string"]) > max_query_string:
            return fastapi.responses.JSONResponse(
                {
                    "detail": f"the query string exceeds {max_query_string} bytes; q holds at "
                    f"most {max_query_chars} characters"
                },
                status_code=414,
            )
        return await call_next(request)

    @app.exception_handler(Exception)
    def internal_error(request, exc: Exception):
        return fastapi.responses.JSONResponse(
            {"detail": "internal error while answering; the server log has the cause"},
            status_code=500,
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **service.describe()}

    @app.get("/search")
    def search(q: query_param, k: k_param = default_k) -> dict[str, Any]:
        return service.search(q, k)

    return app


def serve(
    service: SearchService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_query_chars: int = 512,
    max_k: int = 100,
    num_threads: int | None = 1,
    log_level: str = "info",
) -> None:
    """Run the API with uvicorn in one worker process (the models live in that process).

    ``num_threads`` sets the CPU threads of torch and FAISS for the whole process, once;
    ``None`` leaves them.
    """
    uvicorn = require("uvicorn", "serve")
    app = create_app(service, max_query_chars=max_query_chars, max_k=max_k)
    if num_threads is not None:
        _check_positive_int("num_threads", num_threads)
        require("torch", "search").set_num_threads(num_threads)
        require("faiss", "search").omp_set_num_threads(num_threads)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level)


def cached_summaries(
    folder: Path, passages: Mapping[str, str], max_tokens: int, count_tokens
) -> dict[str, str]:
    """``{doc id: summary}`` from ``folder/summaries-<max_tokens>.json``, made (and written
    atomically) on the first call; made again when the file's ids differ from ``passages``."""
    from winnow.common.runs import atomic_write_text
    from winnow.search.summaries import summarize

    path = folder / f"summaries-{max_tokens}.json"
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.keys() == passages.keys():
            return stored
    ids = list(passages)
    texts = summarize([passages[i] for i in ids], max_tokens, count_tokens)
    made = dict(zip(ids, texts, strict=True))
    atomic_write_text(path, json.dumps(made))
    return made


def _read_manifest(folder: Path) -> dict[str, Any]:
    missing = [name for name in INDEX_FILES if not (folder / name).is_file()]
    if missing:
        raise SearchInputError(
            f"{folder} holds no search index (missing {', '.join(missing)}); build one with "
            f"`{INDEX_COMMAND} --set index_dir={folder}`"
        )
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    absent = [key for key in MANIFEST_KEYS if key not in manifest]
    if absent:
        raise SearchInputError(
            f"{folder / 'manifest.json'} lacks {absent}; rebuild the index with `{INDEX_COMMAND}`"
        )
    return manifest


def _load_retriever(folder: Path, manifest: Mapping[str, Any], device: str) -> DenseRetriever:
    """The fitted retriever that ``build_index`` saved, with the encoder its manifest names."""
    faiss = require("faiss", "search")
    index = faiss.read_index(str(folder / "index.faiss"))
    doc_ids = np.asarray(json.loads((folder / "doc_ids.json").read_text(encoding="utf-8")))
    if index.ntotal != len(doc_ids):
        raise SearchInputError(
            f"{folder}: index.faiss holds {index.ntotal} vectors, doc_ids.json {len(doc_ids)} "
            f"ids; rebuild the index with `{INDEX_COMMAND}`"
        )
    try:
        encoder = Encoder.from_cache_id(manifest["encoder"], device)
    except SearchInputError as error:
        raise SearchInputError(f"{folder / 'manifest.json'}: {error}") from error
    dim = encoder.encode(["warm-up query"], quiet=True).shape[1]
    if dim != index.d:
        raise SearchInputError(
            f"encoder {encoder.cache_id!r} makes {dim}-d vectors but {folder} holds {index.d}-d "
            f"ones; rebuild the index with `{INDEX_COMMAND}`"
        )
    retriever = DenseRetriever(encoder=encoder, index=manifest["index"], cache_dir=None)
    retriever.index_, retriever.doc_ids_, retriever.dim_ = index, doc_ids, index.d
    return retriever


def _passages(dataset: str, doc_ids: list[str], folder: Path) -> dict[str, str]:
    data = load_beir(dataset)
    unknown = sorted(set(doc_ids) - set(data.doc_ids))
    if unknown:
        raise SearchInputError(
            f"{folder} indexes ids missing from {dataset!r} ({unknown[:5]}); the collection "
            f"changed since, so rebuild the index with `{INDEX_COMMAND}`"
        )
    return {p.id: p.text for p in data.passages_of(doc_ids)}


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("q is blank; give a query with at least one non-space character")
    return value


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
