"""Ranking quality against graded judgments: nDCG@k, recall@k and friends, computed by ranx.

Conventions (TREC Deep Learning):

- nDCG uses the raw grades as gains with a ``log2(rank + 1)`` discount (trec_eval's
  ``ndcg_cut``; ranx ``"ndcg"``):
  ``DCG@k = sum_{r=1..k} grade(d_r) / log2(r + 1)``, ``nDCG@k = DCG@k / ideal DCG@k``.
- Binary metrics (recall, precision, MAP, MRR, ...) count a document as relevant when its grade
  is at least ``relevance_level`` (2 by default for TREC DL, where grade 1 is "related").
  ``recall@k = |relevant in top k| / |relevant|``.
- The run's queries are the ones evaluated: those with judgments are scored, those without any
  are left out and listed in :attr:`Evaluation.excluded`. A query with an empty ranking scores 0.
  A query whose judgments hold no grade at the relevance level scores 0 on binary metrics.
- The order of each ranked list is what counts: :func:`run_from_arrays` turns ranks into strictly
  decreasing scores, so ranx never reorders tied documents.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = [
    "GRADED_METRICS",
    "CrossValidated",
    "Evaluation",
    "cross_validated",
    "evaluate_run",
    "paired_bootstrap",
    "ranx_metric_name",
    "run_from_arrays",
    "run_from_rankings",
]

GRADED_METRICS = frozenset({"ndcg", "ndcg_burges", "dcg", "dcg_burges"})
_BINARY_METRICS = frozenset(
    {"recall", "precision", "map", "mrr", "hit_rate", "hits", "f1", "r-precision", "bpref"}
)


@dataclass(frozen=True)
class Evaluation:
    """Per-query and mean values of each metric.

    ``per_query[metric][query_id]`` and ``mean[metric]`` use the names asked for (``"ndcg@10"``),
    not ranx's (``"recall@100-l2"``). ``query_ids`` are the queries scored, ``excluded`` those of
    the run without judgments.
    """

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    query_ids: list[str]
    excluded: list[str]


def ranx_metric_name(metric: str, relevance_level: int = 2) -> str:
    """``"ndcg@10"`` stays; a binary metric gets ranx's level suffix: ``"recall@100-l2"``."""
    base = metric.partition("@")[0]
    if "-l" in metric or base in GRADED_METRICS:
        return metric
    if base not in _BINARY_METRICS:
        known = sorted(GRADED_METRICS | _BINARY_METRICS)
        raise SearchInputError(f"unknown metric {metric!r}; known: {known} (e.g. 'ndcg@10')")
    return f"{metric}-l{relevance_level}"


def run_from_arrays(query_ids: Sequence[str], ids: np.ndarray) -> dict[str, dict[str, float]]:
    """A ranx-style run ``{qid: {docid: score}}`` from ranked ``ids [q, k]``.

    The document at rank ``r`` (from 1) gets score ``1 / r``; empty slots (``""``) are skipped.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != len(query_ids):
        raise SearchInputError(
            f"ids must be [n_queries, k] with n_queries={len(query_ids)}; got {ids.shape}"
        )
    return run_from_rankings(
        {str(qid): row.tolist() for qid, row in zip(query_ids, ids, strict=True)}
    )


def run_from_rankings(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """A ranx-style run from ``{qid: ranked doc ids}`` of any lengths: the document at rank
    ``r`` (from 1) scores ``1 / r``; ``""`` slots are skipped."""
    return {
        str(qid): {doc: 1.0 / r for r, doc in enumerate((d for d in ids if d != ""), start=1)}
        for qid, ids in rankings.items()
    }


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("ndcg@10", "recall@100"),
    relevance_level: int = 2,
) -> Evaluation:
    """Score ``run`` against ``qrels`` over the judged queries of the run.

    Args:
        qrels: ``{qid: {docid: grade}}``, integer grades.
        run: ``{qid: {docid: score}}``, higher is better (see :func:`run_from_arrays`).
        metrics: ranx names such as ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``.
        relevance_level: least grade that counts as relevant for binary metrics.
    """
    ranx = require("ranx", "search")
    if isinstance(metrics, str):
        raise SearchInputError("metrics must be a sequence of names, e.g. ('ndcg@10',)")
    if not isinstance(relevance_level, int) or relevance_level < 1:
        raise SearchInputError(f"relevance_level must be an int >= 1; got {relevance_level!r}")
    names = {metric: ranx_metric_name(metric, relevance_level) for metric in metrics}
    scored = [qid for qid in run if qrels.get(qid)]
    excluded = [qid for qid in run if not qrels.get(qid)]
    if not scored:
        raise SearchInputError(
            "no query of the run has judgments; check that run and qrels use the same query ids"
        )
    ranx_qrels = ranx.Qrels({qid: {d: int(g) for d, g in qrels[qid].items()} for qid in scored})
    ranx_run = ranx.Run({qid: _non_empty(run[qid]) for qid in scored})
    with warnings.catch_warnings():
        # ranx casts its uint64 query offsets to int64 inside numba; harmless at any real size.
        warnings.filterwarnings("ignore", message="unsafe cast from uint64 to int64")
        ranx.evaluate(ranx_qrels, ranx_run, list(names.values()), save_results_in_run=True)
    per_query = {metric: _scores_by_query(ranx_run, name, scored) for metric, name in names.items()}
    mean = {metric: float(np.mean(list(values.values()))) for metric, values in per_query.items()}
    return Evaluation(per_query=per_query, mean=mean, query_ids=scored, excluded=excluded)


def paired_bootstrap(
    first: Mapping[str, float],
    second: Mapping[str, float],
    resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Mean per-query difference ``first - second`` with a percentile bootstrap interval.

    Queries are resampled with replacement, the same draw for both systems (paired), so the
    interval reflects how much the comparison depends on which queries were judged. Both maps
    must hold the same query ids. Returns ``{"difference", "low", "high", "queries"}``.
    """
    if set(first) != set(second) or not first:
        raise SearchInputError(
            "paired_bootstrap needs per-query values of the same non-empty set of queries; got "
            f"{len(first)} and {len(second)} queries, {len(set(first) ^ set(second))} unshared"
        )
    if not 0 < alpha < 1:
        raise SearchInputError(f"alpha must be in (0, 1); got {alpha!r}")
    ids = sorted(first)
    diffs = np.array([first[q] - second[q] for q in ids], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))
    means = diffs[draws].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {
        "difference": float(diffs.mean()),
        "low": float(low),
        "high": float(high),
        "queries": len(ids),
    }


def _scores_by_query(ranx_run, name: str, query_ids: list[str]) -> dict[str, float]:
    saved = ranx_run.scores[name]
    return {qid: float(saved[qid]) for qid in query_ids}


def _non_empty(scores: Mapping[str, float]) -> dict[str, float]:
    # ranx cannot type an empty ranking; a placeholder that is never judged scores as a miss.
    return {str(doc): float(score) for doc, score in scores.items()} or {"\0unretrieved": 0.0}


@dataclass(frozen=True)
class CrossValidated:
    """Cross-validated scores of several systems over the same judged queries.

    ``pooled[system][metric]`` is the mean over every test query of every fold (each query is
    scored once); ``per_fold[system][metric]`` the fold means in fold order;
    ``per_query[system][metric][qid]`` the values behind both; ``versus[system][metric]`` the
    :func:`paired_bootstrap` of ``system - baseline`` over queries.
    """

    pooled: dict[str, dict[str, float]]
    per_fold: dict[str, dict[str, list[float]]]
    per_query: dict[str, dict[str, dict[str, float]]]
    versus: dict[str, dict[str, dict[str, float]]]
    baseline: str
    query_ids: list[str]


def cross_validated(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Sequence[str]]],
    fold_tests: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("ndcg@10", "mrr@10", "recall@100"),
    baseline: str = "dense",
    resamples: int = 10_000,
    seed: int = 0,
) -> CrossValidated:
    """Pool the held-out rankings of each system across folds and compare it with ``baseline``.

    Args:
        qrels: ``{qid: {docid: grade}}``.
        runs: ``{system: {qid: ranked doc ids, best first}}``; each system must rank every
            query of ``fold_tests``, each by the models of the fold that held it out.
        fold_tests: the test query ids of each fold, disjoint.
        metrics: ranx names (``"ndcg_burges@10"`` uses ``2^g - 1`` gains).
    """
    tests = [list(fold) for fold in fold_tests]
    query_ids = [qid for fold in tests for qid in fold]
    if len(set(query_ids)) != len(query_ids):
        raise SearchInputError("fold_tests overlap: a query is in two test folds")
    if baseline not in runs:
        raise SearchInputError(f"baseline {baseline!r} is not among the systems {sorted(runs)}")
    per_query = {}
    for system, ranked in runs.items():
        missing = [qid for qid in query_ids if qid not in ranked]
        if missing:
            raise SearchInputError(
                f"system {system!r} has no ranking for {len(missing)} held-out queries, e.g. "
                f"{missing[:3]}; every system must rank every test query of every fold"
            )
        found = evaluate_run(qrels, run_from_rankings({q: ranked[q] for q in query_ids}), metrics)
        if found.excluded:
            raise SearchInputError(f"held-out queries without judgments: {found.excluded[:3]}")
        per_query[system] = found.per_query
    pooled = {
        system: {m: float(np.mean(list(values[m].values()))) for m in metrics}
        for system, values in per_query.items()
    }
    per_fold = {
        system: {
            m: [float(np.mean([values[m][q] for q in fold])) for fold in tests] for m in metrics
        }
        for system, values in per_query.items()
    }
    versus = {
        system: {
            m: paired_bootstrap(values[m], per_query[baseline][m], resamples, seed=seed)
            for m in metrics
        }
        for system, values in per_query.items()
        if system != baseline
    }
    return CrossValidated(pooled, per_fold, per_query, versus, baseline, query_ids)
