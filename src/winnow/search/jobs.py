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

import numpy as np

from winnow.common.embeddings import SentenceEncoder, encode_cached
from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, atomic_write_text, run_section
from winnow.search.config import EncoderConfig, RetrievalConfig, SearchConfig
from winnow.search.datasets import BeirDataset, load_beir, split_queries
from winnow.search.exceptions import SearchInputError

__all__ = [
    "Corpus",
    "FirstStage",
    "build_index",
    "evaluated_queries",
    "first_stage",
    "retrieval_section",
    "run_search_eval",
]


@dataclass(frozen=True)
class Corpus:
    """The documents retrieval runs over: ids and texts (a slice of the collection or all)."""

    doc_ids: list[str]
    texts: list[str]


def evaluated_queries(data: BeirDataset, config: SearchConfig) -> list[str]:
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


def _encoder(config: EncoderConfig) -> SentenceEncoder:
    return SentenceEncoder(
        config.model, batch_size=config.batch_size, max_seq_length=config.max_seq_length
    )


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


@dataclass(frozen=True)
class FirstStage:
    """The corpus searched, the encoder, and the fitted retrievers by system name."""

    corpus: Corpus
    encoder: SentenceEncoder
    retrievers: dict


def first_stage(
    config: SearchConfig, data: BeirDataset, query_ids: list[str], quiet: bool = False
) -> FirstStage:
    """Embed the corpus (cached) and fit BM25, dense and both hybrids over it."""
    corpus = select_corpus(data, query_ids, config.data.max_passages, config.seed)
    encoder = _encoder(config.encoder)
    vectors = encode_cached(encoder, corpus.texts, config.encoder.cache_dir, quiet=quiet)
    return FirstStage(corpus, encoder, _retrievers(corpus, vectors, config.retrieval, encoder))


def retrieval_section(config: SearchConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Evaluate BM25, dense, both hybrids and every saved reranker (over the dense top
    ``train.candidates``); a table, a bar plot and a per-query scatter."""
    from winnow.search.metrics import evaluate_run, run_from_arrays
    from winnow.search.plots import plot_per_query, plot_system_means
    from winnow.search.reranking import load_rankers, rerank_depth

    data = load_beir(config.data.name)
    query_ids = evaluated_queries(data, config)
    stage = first_stage(config, data, query_ids, quiet)
    rankers = load_rankers(config.train.output_dir, config.train.num_threads)
    texts = [data.query_text(qid) for qid in query_ids]
    depth = max(config.ndcg_at, config.recall_at)
    metrics = (f"ndcg@{config.ndcg_at}", f"recall@{config.recall_at}", f"mrr@{config.ndcg_at}")
    runs = {}
    with track_progress("retrieval", total=len(stage.retrievers), quiet=quiet) as bar:
        for name, retriever in stage.retrievers.items():
            runs[name] = retriever.search(texts, depth)[0]
            bar.advance(1, system=name)
    timings = {}
    with track_progress("reranking", total=len(rankers), quiet=quiet) as bar:
        for name, ranker in rankers.items():
            runs[f"dense+{name}"], timings[name] = rerank_depth(
                ranker.scorer, data, query_ids, runs["dense"], config.train.candidates
            )
            bar.advance(1, system=name)
    results = {
        name: evaluate_run(data.qrels, run_from_arrays(query_ids, ids), metrics)
        for name, ids in runs.items()
    }
    rows = [{"system": name, **found.mean} for name, found in results.items()]
    for row in rows:
        speed = timings.get(row["system"].removeprefix("dense+"))
        row["rerank items/s"] = "" if speed is None else round(speed.items_per_s, 1)
    ndcg = metrics[0]
    bars = run.save_plot(plot_system_means(rows, list(metrics)), "retrieval_means")
    scatter = run.save_plot(
        plot_per_query(results["bm25"].per_query[ndcg], results["dense"].per_query[ndcg], ndcg),
        "retrieval_per_query",
    )
    summary = {
        "queries": config.queries,
        "query_ids": query_ids,
        "passages": len(stage.corpus.doc_ids),
        "encoder": stage.encoder.name,
        "rerankers": {name: ranker.describe() for name, ranker in rankers.items()},
        "rerank_items_per_s": {name: t.items_per_s for name, t in timings.items()},
        "systems": {name: found.mean for name, found in results.items()},
        "per_query": {name: found.per_query for name, found in results.items()},
    }
    trained = (
        f"Rerankers from `{config.train.output_dir}` reorder the dense top "
        f"{config.train.candidates} (the rest keeps the dense order): "
        + ", ".join(f"`{name}`" for name in rankers)
        + ". **`winnow search train` fits the saved rerankers on all judged queries, so their "
        "rows here are in-sample**; their held-out quality is the cross-validation table of the "
        "train report."
        if rankers
        else f"No trained reranker under `{config.train.output_dir}` (run `winnow search train`)."
    )
    markdown = (
        f"{len(query_ids)} judged `{config.queries}` queries of `{config.data.name}` (split "
        f"{config.data.split}, seed {config.seed}) over {len(stage.corpus.doc_ids):,} passages; "
        f"encoder `{stage.encoder.name}`; dense index `{config.retrieval.index}`; hybrids "
        f"fuse the top {config.retrieval.candidates} of BM25 and dense with weights "
        f"{config.retrieval.weights}. {trained} nDCG uses raw grades as gains (trec_eval); "
        "recall and MRR count grade >= 2 as relevant (TREC DL).\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![means](plots/{bars.name})\n\n![per query](plots/{scatter.name})\n"
    )
    return ReportSection(markdown, summary)


def run_search_eval(config: SearchConfig, root: str | Path = "runs", quiet=False) -> Path:
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


def build_index(config: SearchConfig, quiet: bool = False) -> Path:
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
        "encoder": encoder.name,
        "index": config.retrieval.index,
        "passages": len(corpus.doc_ids),
        "dim": int(vectors.shape[1]),
    }
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
    return folder
