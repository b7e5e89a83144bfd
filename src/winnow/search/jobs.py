"""The search jobs: build the first-stage indexes, and evaluate retrieval on held-out queries.

Each job composes the pure parts (loader, encoder, retrievers, metrics) and writes into a
:class:`~winnow.common.runs.RunDir`. ``retrieval_section`` is shared by ``winnow search eval``
and the demo. The rerankers (teachers and the distilled student) join this evaluation when
they exist; today it compares BM25, dense and the two hybrids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from winnow.common.config import Config
from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, atomic_write_text, run_section
from winnow.search.datasets import BeirDataset, load_beir, split_queries
from winnow.search.embed import DEFAULT_CACHE_DIR, Encoder, encode_cached
from winnow.search.exceptions import SearchInputError

__all__ = [
    "IndexJobConfig",
    "SearchEvalConfig",
    "build_index",
    "retrieval_section",
    "run_search_eval",
]

SYSTEMS = ("bm25", "dense", "hybrid_rrf", "hybrid_interpolate")


class DatasetConfig(Config):
    """The collection, its query split, and an optional slice of the corpus."""

    name: str = Field(
        "search/msmarco_trecdl19_subset", description="'<data set>/<folder>' or a BEIR folder"
    )
    split: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="train, dev, test fractions of the judged queries"
    )
    max_passages: int | None = Field(
        None,
        ge=10,
        description="keep the judged passages of the evaluated queries, then distractors, up to "
        "this many (fast runs); null = the whole corpus",
    )


class EncoderConfig(Config):
    """The bi-encoder: the bundled all-MiniLM-L6-v2 unless a hub id or folder is given."""

    model: str | None = None
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(None, ge=8)
    cache_dir: str | None = Field(
        str(DEFAULT_CACHE_DIR), description="embedding cache; null disables it"
    )


class RetrievalConfig(Config):
    """First-stage retrieval: the dense index and how the hybrids fuse BM25 with it."""

    index: Literal["flat", "hnsw"] = "flat"
    candidates: int = Field(100, ge=1, description="hits per retriever before fusing")
    rrf_k: float = Field(60.0, gt=0)
    weights: tuple[float, float] = Field((0.5, 0.5), description="BM25, dense")


class SearchEvalConfig(Config):
    """``winnow search eval``: retrieval quality on one split of the judged queries."""

    seed: int = 0
    data: DatasetConfig = DatasetConfig()
    encoder: EncoderConfig = EncoderConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    queries: Literal["train", "dev", "test", "all"] = "test"
    ndcg_at: int = Field(10, ge=1)
    recall_at: int = Field(100, ge=1)


class IndexJobConfig(Config):
    """``winnow search index``: embed the corpus once and save the FAISS index and doc ids."""

    data: DatasetConfig = DatasetConfig()
    encoder: EncoderConfig = EncoderConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    index_dir: str = Field(
        "runs/search-index", description="folder for index.faiss and doc_ids.json"
    )

    @field_validator("index_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("index_dir is empty; give a folder such as runs/search-index")
        return value


@dataclass(frozen=True)
class Corpus:
    """The documents retrieval runs over: ids and texts (a slice of the collection or all)."""

    doc_ids: list[str]
    texts: list[str]


def evaluated_queries(data: BeirDataset, config: SearchEvalConfig) -> list[str]:
    """The judged queries of the chosen split (the split is by query id, never by pair)."""
    if config.queries == "all":
        return data.judged_query_ids
    split = split_queries(data.judged_query_ids, config.data.split, seed=config.seed)
    chosen = getattr(split, config.queries)
    if not chosen:
        raise SearchInputError(
            f"the {config.queries} split is empty with data.split = {config.data.split}; "
            "give it a larger fraction or use queries: all"
        )
    return chosen


def select_corpus(
    data: BeirDataset, query_ids: list[str], max_passages: int | None, seed: int
) -> Corpus:
    """The whole corpus, or the judged passages of ``query_ids`` plus seeded distractors."""
    if max_passages is None:
        return Corpus(list(data.doc_ids), data.passages)
    judged = sorted({doc for qid in query_ids for doc in data.qrels.get(qid, {})})
    judged = judged[:max_passages]
    others = sorted(set(data.doc_ids) - set(judged))
    rng = np.random.default_rng(seed)
    extra = max(0, min(max_passages - len(judged), len(others)))
    chosen = judged + [others[i] for i in np.sort(rng.choice(len(others), extra, replace=False))]
    passages = data.passages_of(chosen)
    return Corpus([p.id for p in passages], [p.text for p in passages])


def _encoder(config: EncoderConfig) -> Encoder:
    return Encoder(config.model, batch_size=config.batch_size, max_seq_length=config.max_seq_length)


def _retrievers(corpus: Corpus, vectors: np.ndarray, config: RetrievalConfig, encoder) -> dict:
    from winnow.search.retrieve import BM25Retriever, DenseRetriever, HybridRetriever

    dense = DenseRetriever(encoder=encoder, index=config.index).fit(corpus.doc_ids, vectors)
    bm25 = BM25Retriever().fit(corpus.doc_ids, corpus.texts)
    both = [bm25, dense]
    fused = {"candidates": config.candidates, "rrf_k": config.rrf_k}
    return {
        "bm25": bm25,
        "dense": dense,
        "hybrid_rrf": HybridRetriever(both, "rrf", weights=config.weights, **fused),
        "hybrid_interpolate": HybridRetriever(both, "interpolate", weights=config.weights, **fused),
    }


def retrieval_section(config: SearchEvalConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Evaluate BM25, dense and both hybrids; a table, a bar plot and per-query scatter."""
    from winnow.search.metrics import evaluate_run, run_from_arrays
    from winnow.search.plots import plot_per_query, plot_system_means

    data = load_beir(config.data.name)
    query_ids = evaluated_queries(data, config)
    corpus = select_corpus(data, query_ids, config.data.max_passages, config.seed)
    encoder = _encoder(config.encoder)
    vectors = encode_cached(encoder, corpus.texts, config.encoder.cache_dir, quiet=quiet)
    retrievers = _retrievers(corpus, vectors, config.retrieval, encoder)
    texts = [data.query_text(qid) for qid in query_ids]
    depth = max(config.ndcg_at, config.recall_at)
    metrics = (f"ndcg@{config.ndcg_at}", f"recall@{config.recall_at}", f"mrr@{config.ndcg_at}")
    results = {}
    with track_progress("retrieval", total=len(retrievers), quiet=quiet) as bar:
        for name, retriever in retrievers.items():
            ids, _ = retriever.search(texts, depth)
            results[name] = evaluate_run(data.qrels, run_from_arrays(query_ids, ids), metrics)
            bar.advance(1, system=name)
    rows = [{"system": name, **found.mean} for name, found in results.items()]
    ndcg = metrics[0]
    bars = run.save_plot(plot_system_means(rows, list(metrics)), "retrieval_means")
    scatter = run.save_plot(
        plot_per_query(results["bm25"].per_query[ndcg], results["dense"].per_query[ndcg], ndcg),
        "retrieval_per_query",
    )
    summary = {
        "queries": config.queries,
        "query_ids": query_ids,
        "passages": len(corpus.doc_ids),
        "encoder": encoder.cache_id,
        "systems": {name: found.mean for name, found in results.items()},
        "per_query": {name: found.per_query for name, found in results.items()},
    }
    markdown = (
        f"{len(query_ids)} judged `{config.queries}` queries of `{config.data.name}` (split "
        f"{config.data.split}, seed {config.seed}) over {len(corpus.doc_ids):,} passages; "
        f"encoder `{encoder.cache_id}`; dense index `{config.retrieval.index}`; hybrids fuse the "
        f"top {config.retrieval.candidates} of BM25 and dense with weights "
        f"{config.retrieval.weights}. nDCG uses raw grades as gains (trec_eval); recall and MRR "
        "count grade >= 2 as relevant (TREC DL).\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![means](plots/{bars.name})\n\n![per query](plots/{scatter.name})\n"
    )
    return ReportSection(markdown, summary)


def run_search_eval(config: SearchEvalConfig, root: str | Path = "runs", quiet=False) -> Path:
    """``winnow search eval`` into a new run folder; returns the path of ``report.html``."""
    return run_section(
        "search-eval",
        config,
        retrieval_section,
        "Search eval",
        root,
        quiet,
        heading="Search: retrieval quality",
    )


def build_index(config: IndexJobConfig, quiet: bool = False) -> Path:
    """Embed the corpus (cached), build the dense index and write it with its doc ids.

    Writes ``index.faiss``, ``doc_ids.json`` and ``manifest.json`` (encoder, index kind,
    passages) into ``config.index_dir``, each through a temporary file; returns the folder.
    """
    import faiss

    from winnow.search.retrieve import DenseRetriever

    data = load_beir(config.data.name)
    corpus = select_corpus(data, data.judged_query_ids, config.data.max_passages, seed=0)
    encoder = _encoder(config.encoder)
    vectors = encode_cached(encoder, corpus.texts, config.encoder.cache_dir, quiet=quiet)
    dense = DenseRetriever(encoder=encoder, index=config.retrieval.index)
    dense.fit(corpus.doc_ids, vectors)
    folder = Path(config.index_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "index.faiss.tmp"
    faiss.write_index(dense.index_, str(tmp))
    tmp.replace(folder / "index.faiss")
    atomic_write_text(folder / "doc_ids.json", json.dumps(corpus.doc_ids))
    manifest = {
        "dataset": config.data.name,
        "encoder": encoder.cache_id,
        "index": config.retrieval.index,
        "passages": len(corpus.doc_ids),
        "dim": int(vectors.shape[1]),
    }
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
    return folder
