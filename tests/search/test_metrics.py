"""nDCG@k and recall@k (ranx) against hand-computed values, with TREC DL conventions."""

import math

import numpy as np
import pytest

from winnow.search.exceptions import SearchInputError
from winnow.search.metrics import (
    cross_validated,
    evaluate_run,
    paired_bootstrap,
    ranx_metric_name,
    run_from_arrays,
)

QRELS = {"q1": {"d1": 3, "d2": 2, "d3": 1, "d5": 0}, "q2": {"d7": 1, "d8": 2}}


def test_hand_computed_ndcg_and_recall():
    ranked = np.array([["d2", "d4", "d1", "d3"], ["d8", "d9", "", ""], ["d1", "d2", "d3", "d4"]])
    run = run_from_arrays(["q1", "q2", "q3"], ranked)
    result = evaluate_run(QRELS, run, ("ndcg@3", "recall@2", "recall@4"), relevance_level=2)

    # q1 nDCG@3: gains (2, 0, 3) at ranks 1-3, discount log2(rank + 1):
    #   DCG = 2/log2(2) + 0/log2(3) + 3/log2(4) = 2 + 1.5 = 3.5
    #   ideal order (3, 2, 1): IDCG = 3/1 + 2/log2(3) + 1/2 = 4.7618...
    q1_ndcg = 3.5 / (3 + 2 / math.log2(3) + 0.5)
    # q2 nDCG@3: gain 2 at rank 1; ideal (2, 1): IDCG = 2 + 1/log2(3)
    q2_ndcg = 2 / (2 + 1 / math.log2(3))
    # recall with grade >= 2 relevant: q1 has {d1, d2}; q2 has {d8}
    #   q1 recall@2 = |{d2}| / 2 = 0.5, recall@4 = |{d2, d1}| / 2 = 1; q2 recall@2 = recall@4 = 1
    assert result.per_query["ndcg@3"] == pytest.approx({"q1": q1_ndcg, "q2": q2_ndcg})
    assert result.per_query["recall@2"] == pytest.approx({"q1": 0.5, "q2": 1.0})
    assert result.per_query["recall@4"] == pytest.approx({"q1": 1.0, "q2": 1.0})
    assert result.mean["ndcg@3"] == pytest.approx((q1_ndcg + q2_ndcg) / 2)
    assert result.mean["recall@2"] == pytest.approx(0.75)
    assert result.query_ids == ["q1", "q2"] and result.excluded == ["q3"]


def test_relevance_level_one_counts_related_documents():
    run = run_from_arrays(["q1"], np.array([["d3", "d1"]]))
    # grade >= 1 relevant: {d1, d2, d3}; top 2 holds d3 and d1 -> 2/3
    result = evaluate_run(QRELS, run, ("recall@2",), relevance_level=1)
    assert result.mean["recall@2"] == pytest.approx(2 / 3)


def test_rank_order_counts_not_ties_or_doc_ids():
    # The two runs hold the same documents; only their order differs.
    best = evaluate_run(QRELS, run_from_arrays(["q1"], np.array([["d1", "d2"]])), ("ndcg@2",))
    worst = evaluate_run(QRELS, run_from_arrays(["q1"], np.array([["d2", "d1"]])), ("ndcg@2",))
    assert best.mean["ndcg@2"] == pytest.approx(1.0)
    assert worst.mean["ndcg@2"] < 1.0


def test_empty_ranking_scores_zero():
    result = evaluate_run(QRELS, {"q1": {}, "q2": {"d8": 1.0}}, ("ndcg@3",))
    assert result.per_query["ndcg@3"]["q1"] == 0.0


def test_metric_names_and_errors():
    assert ranx_metric_name("ndcg@10") == "ndcg@10"
    assert ranx_metric_name("recall@100", relevance_level=2) == "recall@100-l2"
    with pytest.raises(SearchInputError, match="unknown metric"):
        ranx_metric_name("nope@3")
    with pytest.raises(SearchInputError, match="no query of the run has judgments"):
        evaluate_run(QRELS, {"q9": {"d1": 1.0}})
    with pytest.raises(SearchInputError, match="n_queries"):
        run_from_arrays(["q1"], np.array([["d1"], ["d2"]]))


def test_paired_bootstrap_interval():
    first = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.4}
    second = {"a": 0.8, "b": 0.5, "c": 0.4, "d": 0.4}
    result = paired_bootstrap(first, second, resamples=4000, seed=1)
    assert result["difference"] == pytest.approx(0.1)  # (0.1 + 0 + 0.3 + 0) / 4
    assert 0.0 <= result["low"] <= 0.1 <= result["high"] <= 0.3
    assert result == paired_bootstrap(first, second, resamples=4000, seed=1)
    same = paired_bootstrap(first, dict(first))
    assert same["difference"] == same["low"] == same["high"] == 0.0
    # a constant shift has no spread: every resample has the same mean
    shifted = paired_bootstrap({k: v + 0.2 for k, v in second.items()}, second)
    assert shifted["low"] == pytest.approx(0.2) and shifted["high"] == pytest.approx(0.2)
    with pytest.raises(SearchInputError, match="same non-empty set"):
        paired_bootstrap(first, {"a": 0.1})


def test_cross_validated_pools_each_query_once_and_compares_with_the_baseline():
    qrels = {"q1": {"d1": 3, "d2": 1}, "q2": {"d3": 2}, "q3": {"d4": 1, "d5": 3}}
    runs = {
        "dense": {"q1": ["d2", "d1"], "q2": ["d9", "d3"], "q3": ["d5", "d4"]},
        "ranker": {"q1": ["d1", "d2"], "q2": ["d3"], "q3": ["d5", "d4"]},
    }
    result = cross_validated(qrels, runs, [["q1", "q2"], ["q3"]], ("ndcg@2", "ndcg_burges@2"))
    # dense q1: gains (1, 3); ideal (3, 1): (1 + 3/log2 3) / (3 + 1/log2 3)
    dense_q1 = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    # q1 with 2^g - 1 gains (1, 7) against the ideal (7, 1)
    burges_q1 = (1 + 7 / math.log2(3)) / (7 + 1 / math.log2(3))
    dense_q2 = (2 / math.log2(3)) / 2
    assert result.per_query["dense"]["ndcg@2"] == pytest.approx(
        {"q1": dense_q1, "q2": dense_q2, "q3": 1.0}
    )
    assert result.per_query["dense"]["ndcg_burges@2"]["q1"] == pytest.approx(burges_q1)
    assert result.pooled["ranker"]["ndcg@2"] == pytest.approx(1.0)
    assert result.pooled["dense"]["ndcg@2"] == pytest.approx((dense_q1 + dense_q2 + 1) / 3)
    assert result.per_fold["dense"]["ndcg@2"] == pytest.approx([(dense_q1 + dense_q2) / 2, 1.0])
    gap = result.versus["ranker"]["ndcg@2"]
    assert gap["difference"] == pytest.approx(1 - result.pooled["dense"]["ndcg@2"])
    assert gap["low"] <= gap["difference"] <= gap["high"] and gap["queries"] == 3
    assert "dense" not in result.versus and result.query_ids == ["q1", "q2", "q3"]


def test_cross_validated_refuses_missing_or_overlapping_queries():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    runs = {"dense": {"q1": ["d1"], "q2": ["d2"]}, "ranker": {"q1": ["d1"]}}
    with pytest.raises(SearchInputError, match="'ranker' has no ranking for 1"):
        cross_validated(qrels, runs, [["q1"], ["q2"]], ("ndcg@2",))
    with pytest.raises(SearchInputError, match="overlap"):
        cross_validated(qrels, {"dense": runs["dense"]}, [["q1"], ["q1", "q2"]], ("ndcg@2",))
    with pytest.raises(SearchInputError, match="baseline 'bm25'"):
        cross_validated(qrels, runs, [["q1"], ["q2"]], ("ndcg@2",), baseline="bm25")
