"""Cross-validated rerankers: each judged query is reranked by models that never saw its labels.

:func:`cross_validate` runs the training pipeline of :mod:`winnow.search.training` once per
fold of :func:`~winnow.search.folds.make_folds`, with the fold's queries in the roles of the
split: teachers and students learn from ``fold.fit`` (SIMULATED clicks too are drawn over those
queries only), settings listed in ``train.cv.choices`` are chosen by nDCG@10 on ``fold.inner``,
and every reranker then reorders the dense top ``train.candidates`` of ``fold.test``. The
first-stage systems (BM25, dense, hybrids) learn nothing, so their rankings of all judged queries
are pooled the same way. :func:`~winnow.search.metrics.cross_validated` turns the rankings into
pooled metrics, per-fold values and paired bootstrap intervals against dense.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from winnow.common.progress import track_progress
from winnow.search.config import SearchConfig
from winnow.search.datasets import QuerySplit
from winnow.search.folds import Fold
from winnow.search.reranking import rerank_depth

__all__ = [
    "FoldResult",
    "Rankings",
    "choose_on_inner",
    "cross_validate",
    "first_stage_rankings",
    "fold_training",
    "rerank_rankings",
]

Rankings = dict[str, dict[str, list[str]]]
"""``{system: {query id: ranked doc ids, best first}}``."""


@dataclass(frozen=True)
class FoldResult:
    """What one fold produced: its held-out rankings, the settings chosen on its inner split
    (``{system: {"chosen": index, "inner_ndcg@10": [per choice]}}``), rerank items/s and the
    wall seconds of its training."""

    fold: Fold
    rankings: Rankings
    chosen: dict[str, dict]
    items_per_s: dict[str, float]
    train_seconds: float


def fold_training(training, fold: Fold):
    """``training`` with the fold's queries as the split: ``fit`` trains, ``inner`` chooses
    settings, ``test`` is held out (``TrainingData.split`` is what the pipeline reads)."""
    return dataclasses.replace(training, split=QuerySplit(fold.fit, fold.inner, fold.test))


def first_stage_rankings(training, query_ids: list[str], depth: int) -> Rankings:
    """Each first-stage retriever's top ``depth`` for ``query_ids`` (nothing is trained)."""
    texts = [training.data.query_text(qid) for qid in query_ids]
    rankings = {}
    for name, retriever in training.stage.retrievers.items():
        ids = retriever.search(texts, depth)[0]
        rankings[name] = {qid: _ranked(row) for qid, row in zip(query_ids, ids, strict=True)}
    return rankings


def rerank_rankings(
    rankers: Mapping[str, object], training, query_ids: list[str], dense: Rankings, depth: int
) -> tuple[Rankings, dict[str, float]]:
    """Every ranker reorders the first ``depth`` of the dense ranking of ``query_ids`` (the rest
    keeps the dense order, so recall at deeper cut-offs is dense's); also items/s per ranker."""
    width = max(len(dense[qid]) for qid in query_ids)
    run = np.array([dense[qid] + [""] * (width - len(dense[qid])) for qid in query_ids])
    rankings, speed = {}, {}
    for name, ranker in rankers.items():
        ids, timing = rerank_depth(ranker, training.data, query_ids, run, depth)
        rankings[name] = {qid: _ranked(row) for qid, row in zip(query_ids, ids, strict=True)}
        speed[name] = timing.items_per_s
    return rankings, speed


def choose_on_inner(
    candidates: list, training, inner: list[str], dense: Rankings, depth: int
) -> tuple[int, list[float]]:
    """Index of the candidate ranker with the best nDCG@10 on the ``inner`` queries (first on
    ties), and every candidate's value."""
    from winnow.search.metrics import evaluate_run, run_from_rankings

    named = {f"choice{i}": ranker for i, ranker in enumerate(candidates)}
    rankings, _ = rerank_rankings(named, training, inner, dense, depth)
    values = [
        evaluate_run(training.data.qrels, run_from_rankings(rankings[name]), ("ndcg@10",)).mean[
            "ndcg@10"
        ]
        for name in named
    ]
    return int(np.argmax(values)), values


def cross_validate(
    config: SearchConfig,
    training,
    folds: list[Fold],
    train_fold,
    quiet: bool = False,
    checkpoints=None,
) -> tuple[Rankings, list[FoldResult]]:
    """Held-out rankings of every system over every fold's test queries.

    ``train_fold(config, fold_view, dense, quiet) -> ({name: ranker}, chosen)`` trains one
    fold's rerankers on ``fold_view.split.train`` (choosing settings on ``.dev``, the inner
    split). ``checkpoints`` (a :class:`~winnow.search.fold_checkpoints.FoldCheckpoints`) saves
    each finished fold and supplies the folds of a resumed run. Returns the pooled ``Rankings``
    (first-stage systems and rerankers) and one :class:`FoldResult` per fold.
    """
    depth = max(config.recall_at, config.train.candidates)
    # every judged query: inner splits reach into folds that ``folds`` may not hold
    pooled = first_stage_rankings(training, training.data.judged_query_ids, depth)
    results = []
    with track_progress("cross-validation folds", len(folds), quiet) as bar:
        for fold in folds:
            result = checkpoints.load(fold) if checkpoints is not None else None
            if result is None:
                result = _train_and_rerank(config, training, fold, train_fold, pooled, quiet)
                if checkpoints is not None:
                    checkpoints.save(result)
            for name, ranked in result.rankings.items():
                pooled.setdefault(name, {}).update(ranked)
            results.append(result)
            bar.advance(1, fold=fold.index, seconds=round(result.train_seconds))
    return pooled, results


def _train_and_rerank(config, training, fold: Fold, train_fold, pooled, quiet) -> FoldResult:
    view = fold_training(training, fold)
    start = time.perf_counter()
    rankers, chosen = train_fold(config, view, pooled["dense"], quiet)
    seconds = time.perf_counter() - start
    rankings, speed = rerank_rankings(
        rankers, training, fold.test, pooled["dense"], config.train.candidates
    )
    return FoldResult(fold, rankings, chosen, speed, seconds)


def _ranked(row) -> list[str]:
    return [str(doc) for doc in row if doc != ""]
