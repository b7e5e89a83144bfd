"""Generated queries filtered and given hard negatives; the job that writes a query set.

A query written for a passage (:mod:`winnow.search.querygen`) becomes a training query when:

1. **round trip**: dense retrieval over the corpus ranks its source passage in the top ``k``
   (:func:`round_trip_keep`); a query that does not find its own passage is too vague or wrong;
2. **no leak**: it is not a near-duplicate of any judged (evaluation) query
   (:func:`near_duplicates`): MiniLM cosine ``>= duplicate_cosine``, or word-set Jaccard
   ``>= duplicate_jaccard``, or equal after :func:`~winnow.search.querygen.normalise_query`.

Its positive is the source passage; its negatives are the top BM25 and dense hits other than
the source (:func:`hard_negatives`). Per cross-validation fold, :func:`exclude_sources` drops the
queries made from passages judged for that fold's evaluation queries.

:func:`build_query_set` runs all of it for a :class:`~winnow.search.config.SearchConfig`
(``train.generated``); :func:`run_gen_queries` writes the JSONL (:func:`write_generated`) and a
``.summary.json`` beside it: counts, timings, the closest generated/judged pairs, the config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import winnow
from winnow.common.embeddings import encode_cached
from winnow.common.runs import atomic_write_text, to_jsonable
from winnow.search.config import GeneratedQueriesConfig, SearchConfig
from winnow.search.cross_encoder import CandidateList
from winnow.search.datasets import jsonl_records, load_beir
from winnow.search.exceptions import DatasetFormatError, SearchInputError
from winnow.search.fitting import torch_threads
from winnow.search.jobs import first_stage
from winnow.search.querygen import (
    ExtractiveQueryGenerator,
    LLMQueryGenerator,
    QueryGenerator,
    normalise_query,
)
from winnow.search.retrieve import Retriever

__all__ = [
    "GENERATORS",
    "DuplicateCheck",
    "GeneratedQuery",
    "QuerySet",
    "build_query_set",
    "exclude_sources",
    "generated_candidate_lists",
    "hard_negatives",
    "near_duplicates",
    "read_generated",
    "round_trip_keep",
    "run_gen_queries",
    "token_jaccard",
    "write_generated",
]


@dataclass(frozen=True)
class GeneratedQuery:
    """A query made from passage ``source_doc_id`` (its one positive), with hard negatives.

    ``method`` names the generator (``"extractive"``, ``"llm"``); ``negatives`` are document ids
    ranked high by BM25 or dense retrieval for ``text``, never the source.
    """

    query_id: str
    text: str
    source_doc_id: str
    method: str
    negatives: tuple[str, ...] = ()


def write_generated(path: str | Path, queries: Sequence[GeneratedQuery]) -> Path:
    """One JSON object per query and line, written atomically; returns the path."""
    lines = [json.dumps({**asdict(q), "negatives": list(q.negatives)}) + "\n" for q in queries]
    return atomic_write_text(path, "".join(lines))


def read_generated(path: str | Path) -> list[GeneratedQuery]:
    """The queries of a :func:`write_generated` file; a bad line fails naming file and line."""
    queries = []
    fields = ("query_id", "text", "source_doc_id", "method")
    for line_no, record in jsonl_records(path):
        negatives = record.get("negatives", [])
        if not all(isinstance(record.get(name), str) for name in fields) or not (
            isinstance(negatives, list) and all(isinstance(doc, str) for doc in negatives)
        ):
            raise DatasetFormatError(
                path, line_no, f"need string fields {fields} and a list of ids 'negatives'"
            )
        queries.append(GeneratedQuery(*(record[name] for name in fields), tuple(negatives)))
    return queries


def exclude_sources(
    generated: Sequence[GeneratedQuery], doc_ids: Collection[str]
) -> list[GeneratedQuery]:
    """The queries whose source passage is not in ``doc_ids``, in order."""
    excluded = set(doc_ids)
    return [query for query in generated if query.source_doc_id not in excluded]


def generated_candidate_lists(
    data,
    generated: Sequence[GeneratedQuery],
    held_docs: Collection[str],
    limit: int | None,
    seed: int,
) -> list[CandidateList]:
    """Graded lists of generated queries for training: the source passage (grade 3) and its
    hard negatives (grade 0), for the queries whose source is not in ``held_docs`` (passages
    judged for queries the models must not learn about), a seeded sample of ``limit`` of them
    (``None``: all)."""
    kept = exclude_sources(generated, held_docs)
    if limit is not None and len(kept) > limit:
        kept = [kept[i] for i in _sample(len(kept), limit, seed)]
    lists = []
    for query in kept:
        passages = data.passages_of([query.source_doc_id, *query.negatives])
        lists.append(
            CandidateList(
                query_id=query.query_id,
                query=query.text,
                doc_ids=tuple(p.id for p in passages),
                docs=tuple(p.text for p in passages),
                labels=np.array([3.0] + [0.0] * (len(passages) - 1)),
            )
        )
    return lists


def round_trip_keep(
    retriever: Retriever, queries: Sequence[str] | np.ndarray, sources: Sequence[str], k: int = 20
) -> np.ndarray:
    """``[n]`` bool: whether ``retriever`` ranks query ``i``'s source ``sources[i]`` in its top
    ``k``. ``queries`` are whatever the retriever searches with (texts, or a ``[n, d]`` array)."""
    if len(queries) != len(sources):
        raise SearchInputError(f"got {len(queries)} queries but {len(sources)} sources")
    ids, _ = retriever.search(queries, k)
    return np.array([source in row for source, row in zip(sources, ids.tolist(), strict=True)])


def token_jaccard(a: str, b: str) -> float:
    """``|A & B| / |A | B|`` of the normalised word sets of ``a`` and ``b``; 0 when both empty."""
    return _jaccard(set(normalise_query(a).split()), set(normalise_query(b).split()))


def _jaccard(left: set[str], right: set[str]) -> float:
    union = left | right
    return len(left & right) / len(union) if union else 0.0


@dataclass(frozen=True)
class DuplicateCheck:
    """Each generated query against its closest judged query.

    Shape:
        ``duplicate``: ``[n]`` bool. ``closest``: ``[n]`` int, index into the judged queries
        (the one that made it a duplicate, else the highest cosine). ``cosine``, ``jaccard``:
        ``[n]`` float of that pair. ``reason``: ``n`` strings, ``"exact"``, ``"cosine"``,
        ``"jaccard"`` or ``""`` (kept).
    """

    duplicate: np.ndarray
    closest: np.ndarray
    cosine: np.ndarray
    jaccard: np.ndarray
    reason: list[str]

    def counts(self) -> dict[str, int]:
        """``{"exact": .., "cosine": .., "jaccard": ..}``: duplicates by their first reason."""
        return {name: self.reason.count(name) for name in ("exact", "cosine", "jaccard")}

    def closest_pairs(
        self, queries: Sequence[str], judged: Sequence[str], top: int = 10
    ) -> list[dict]:
        """The ``top`` most similar (generated, judged) pairs by cosine, for a report."""
        order = np.argsort(-self.cosine, kind="stable")[:top]
        return [
            {
                "generated": queries[i],
                "judged": judged[self.closest[i]],
                "cosine": round(float(self.cosine[i]), 4),
                "jaccard": round(float(self.jaccard[i]), 4),
                "duplicate": self.reason[i] or "no",
            }
            for i in order
        ]


def near_duplicates(
    queries: Sequence[str],
    judged: Sequence[str],
    query_vectors: np.ndarray,
    judged_vectors: np.ndarray,
    cosine_threshold: float = 0.9,
    jaccard_threshold: float = 0.8,
) -> DuplicateCheck:
    """Flag generated queries too close to any judged query (see the module doc).

    Args:
        queries, judged: ``n`` generated and ``m >= 1`` judged query texts.
        query_vectors, judged_vectors: ``[n, d]`` and ``[m, d]`` L2-normalised embeddings.
    """
    query_vectors, judged_vectors = np.asarray(query_vectors), np.asarray(judged_vectors)
    if (
        not judged
        or query_vectors.shape[0] != len(queries)
        or judged_vectors.shape[0] != len(judged)
    ):
        raise SearchInputError(
            f"need m >= 1 judged queries and one vector per text; got {len(queries)} queries, "
            f"{query_vectors.shape[0]} vectors, {len(judged)} judged, {judged_vectors.shape[0]}"
        )
    cosine = query_vectors @ judged_vectors.T
    shape = (len(queries), len(judged))
    normal_queries = [normalise_query(text) for text in queries]
    normal_judged = [normalise_query(text) for text in judged]
    query_sets = [set(text.split()) for text in normal_queries]
    judged_sets = [set(text.split()) for text in normal_judged]
    jaccard = np.array([[_jaccard(q, j) for j in judged_sets] for q in query_sets]).reshape(shape)
    exact = np.array([[q == j for j in normal_judged] for q in normal_queries], dtype=bool)
    exact = exact.reshape(shape)
    reasons, closest = [], []
    for i in range(len(queries)):
        if exact[i].any():
            reason, j = "exact", int(np.argmax(exact[i]))
        elif cosine[i].max() >= cosine_threshold:
            reason, j = "cosine", int(np.argmax(cosine[i]))
        elif jaccard[i].max() >= jaccard_threshold:
            reason, j = "jaccard", int(np.argmax(jaccard[i]))
        else:
            reason, j = "", int(np.argmax(cosine[i]))
        reasons.append(reason)
        closest.append(j)
    rows = np.arange(len(queries))
    closest = np.array(closest, dtype=int)
    return DuplicateCheck(
        duplicate=np.array([bool(r) for r in reasons], dtype=bool),
        closest=closest,
        cosine=cosine[rows, closest].astype(np.float32),
        jaccard=jaccard[rows, closest].astype(np.float32),
        reason=reasons,
    )


def hard_negatives(
    sources: Sequence[str], rankings: Sequence[np.ndarray], n: int
) -> list[tuple[str, ...]]:
    """Per query, the first ``n`` ids of each ranking that are not its source, not empty
    (``""``) and not taken from an earlier ranking: up to ``n * len(rankings)`` ids.

    ``rankings``: ``[q, depth]`` id arrays, best first (e.g. BM25 then dense); a depth of
    ``n * len(rankings) + 1`` always leaves room for ``n`` per ranking.
    """
    negatives = []
    for row, source in enumerate(sources):
        chosen: list[str] = []
        for ids in rankings:
            fresh = [doc for doc in ids[row] if doc not in (source, "") and doc not in chosen]
            chosen += fresh[:n]
        negatives.append(tuple(chosen))
    return negatives


def _extractive(settings: GeneratedQueriesConfig, corpus: Sequence[str]) -> QueryGenerator:
    low, high = settings.extractive_words
    return ExtractiveQueryGenerator(low, high, random_state=settings.seed).fit(corpus)


def _llm(settings: GeneratedQueriesConfig, corpus: Sequence[str]) -> QueryGenerator:
    low, high = settings.query_words
    return LLMQueryGenerator.from_pretrained(
        settings.model,
        gguf_file=settings.gguf_file,
        dtype=settings.dtype,
        device=settings.device,
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        seed=settings.seed,
        min_words=low,
        max_words=high,
        copy_words=settings.copy_words,
        cache_path=settings.cache,
        num_threads=settings.num_threads,
    )


GENERATORS: dict[str, Callable[[GeneratedQueriesConfig, Sequence[str]], QueryGenerator]] = {
    "extractive": _extractive,
    "llm": _llm,
}


@dataclass(frozen=True)
class QuerySet:
    """The kept queries and a JSON-ready summary of how they were made and filtered."""

    queries: list[GeneratedQuery]
    summary: dict


def build_query_set(config: SearchConfig, quiet: bool = False) -> QuerySet:
    """Generate queries for the corpus of ``config`` (``data.max_passages`` slices it), keep
    those that pass the round trip and the duplicate check, and add their hard negatives."""
    settings = config.train.generated
    data = load_beir(config.data.name)
    with torch_threads(settings.num_threads):
        stage = first_stage(config, data, data.judged_query_ids, quiet)
        corpus = stage.corpus
        chosen = _sample(len(corpus.doc_ids), settings.max_passages, settings.seed)
        generator = GENERATORS[settings.method](settings, corpus.texts)
        started = time.perf_counter()
        texts_per_passage = generator.generate(
            [corpus.texts[i] for i in chosen], settings.per_passage, quiet=quiet
        )
        seconds = time.perf_counter() - started
        made = [
            (f"gen-{settings.method}-{corpus.doc_ids[i]}-{j}", text, corpus.doc_ids[i])
            for i, texts in zip(chosen, texts_per_passage, strict=True)
            for j, text in enumerate(texts)
        ]
        summary = {
            "method": settings.method,
            "passages": len(chosen),
            "corpus_passages": len(corpus.doc_ids),
            "asked": len(chosen) * settings.per_passage,
            "generated": len(made),
            "generation_seconds": round(seconds, 3),
            "seconds_per_passage": round(seconds / max(len(chosen), 1), 4),
        }
        if not made:
            return QuerySet([], {**summary, "kept_round_trip": 0, "near_duplicates": 0, "kept": 0})
        queries = _filter_and_mine(config, data, stage, made, summary)
    return QuerySet(queries, summary)


def _filter_and_mine(config, data, stage, made, summary: dict) -> list[GeneratedQuery]:
    settings = config.train.generated
    texts, sources = [m[1] for m in made], [m[2] for m in made]
    vectors = encode_cached(stage.encoder, texts, config.encoder.cache_dir, quiet=True)
    dense, bm25 = stage.retrievers["dense"], stage.retrievers["bm25"]
    round_trip = round_trip_keep(dense, vectors, sources, settings.round_trip_k)
    judged = [data.query_text(qid) for qid in data.judged_query_ids]
    judged_vectors = encode_cached(stage.encoder, judged, config.encoder.cache_dir, quiet=True)
    check = near_duplicates(
        texts,
        judged,
        vectors,
        judged_vectors,
        settings.duplicate_cosine,
        settings.duplicate_jaccard,
    )
    kept = np.flatnonzero(round_trip & ~check.duplicate)
    negatives: list[tuple[str, ...]] = [()] * len(kept)
    if settings.negatives and len(kept):
        depth = 2 * settings.negatives + 1
        kept_texts = [texts[i] for i in kept]
        rankings = [bm25.search(kept_texts, depth)[0], dense.search(vectors[kept], depth)[0]]
        negatives = hard_negatives([sources[i] for i in kept], rankings, settings.negatives)
    summary.update(
        kept_round_trip=int(round_trip.sum()),
        round_trip_k=settings.round_trip_k,
        near_duplicates=int(check.duplicate.sum()),
        near_duplicates_by_reason=check.counts(),
        dropped_near_duplicate=int((round_trip & check.duplicate).sum()),
        kept=len(kept),
        closest_pairs=check.closest_pairs(texts, judged),
    )
    return [
        GeneratedQuery(made[i][0], texts[i], sources[i], settings.method, negatives[row])
        for row, i in enumerate(kept)
    ]


def _sample(n: int, size: int | None, seed: int) -> list[int]:
    if size is None or size >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size, replace=False).tolist())


def run_gen_queries(config: SearchConfig, out: str | Path, quiet: bool = False) -> QuerySet:
    """``winnow search gen-queries``: :func:`build_query_set`, then ``out`` (JSONL) and
    ``<out stem>.summary.json`` (counts, closest pairs, config, winnow version)."""
    query_set = build_query_set(config, quiet=quiet)
    out = Path(out)
    write_generated(out, query_set.queries)
    record = {
        **query_set.summary,
        "winnow_version": winnow.__version__,
        "config": config.model_dump(mode="json"),
    }
    atomic_write_text(
        out.with_name(f"{out.stem}.summary.json"), json.dumps(to_jsonable(record), indent=2) + "\n"
    )
    return query_set
