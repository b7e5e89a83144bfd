"""A model judge's agreement with the qrels: AUC for grade >= 2 and nDCG@10 in its order, on
hand-computed lists."""

import math

import numpy as np
import pytest

from winnow.search.cross_encoder import CandidateList
from winnow.search.judge_check import judge_agreement

QRELS = {"q1": {"a": 3, "b": 0, "c": 1}, "q2": {"d": 2, "e": 0}}


def lists(q1_grades, q2_grades=(0.8, 0.2, 0.5)):
    return [
        CandidateList("q1", "q one", ("a", "b", "c"), ("", "", ""), np.array(q1_grades)),
        CandidateList("q2", "q two", ("d", "e", "x"), ("", "", ""), np.array(q2_grades)),
    ]


def test_a_judge_that_orders_like_the_qrels_scores_one():
    found = judge_agreement(lists([0.9, 0.1, 0.5]), QRELS)
    assert found == {"auc_grade2": 1.0, "ndcg@10": pytest.approx(1.0), "pairs": 5, "queries": 2}


def test_a_reversed_judge_has_auc_zero_and_the_hand_computed_ndcg():
    found = judge_agreement(lists([0.1, 0.9, 0.5], [0.2, 0.8, 0.5]), QRELS)
    assert found["auc_grade2"] == 0.0
    # q1 in order b, c, a: (0 + 1/log2(3) + 3/log2(4)) / (3 + 1/log2(3)); q2 in order e, x, d
    q1 = (1 / math.log2(3) + 3 / 2) / (3 + 1 / math.log2(3))
    q2 = (2 / 2) / 2
    assert found["ndcg@10"] == pytest.approx((q1 + q2) / 2)


def test_missing_grades_and_unjudged_documents_stay_out_of_the_auc():
    found = judge_agreement(lists([0.9, np.nan, 0.5], [0.8, 0.2, np.nan]), QRELS)
    assert found["pairs"] == 4 and found["auc_grade2"] == 1.0  # b (NaN) and x (unjudged) out


def test_one_class_gives_no_auc():
    only = [CandidateList("q2", "q", ("e",), ("",), np.array([0.3]))]
    assert judge_agreement(only, QRELS)["auc_grade2"] is None
