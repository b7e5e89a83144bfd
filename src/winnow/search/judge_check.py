"""How far a model judge agrees with the qrels, measured before its labels train anything.

A judge other than the qrels (a chat LLM, a local causal LM) grades the candidate lists of a
fold's fit queries, whose qrels training may read. Against those qrels, per
:func:`judge_agreement`:

- ``auc_grade2``: ROC AUC of the judge's grade for TREC "highly relevant" (grade >= 2) against
  the other judged candidates (unjudged candidates and ``NaN`` grades are left out);
- ``ndcg@10``: each list ordered by the judge's grade, scored against the qrels
  (:func:`~winnow.search.metrics.evaluate_run`, raw grades as gains), the mean over queries.

A judge no better than chance (AUC near 0.5) teaches noise; ``winnow search train`` reports
these figures per fold beside what the teachers learnt from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from winnow.common.extras import require
from winnow.search.cross_encoder import CandidateList
from winnow.search.metrics import evaluate_run, run_from_rankings

__all__ = ["RELEVANT_GRADE", "judge_agreement"]

RELEVANT_GRADE = 2


def judge_agreement(lists: Sequence[CandidateList], qrels: Mapping[str, Mapping[str, int]]) -> dict:
    """``{"auc_grade2", "ndcg@10", "pairs", "queries"}`` of the judge grades in ``lists``
    (``labels``, one list per query) against ``qrels``; ``auc_grade2`` is ``None`` when the
    judged pairs hold one class only."""
    metrics = require("sklearn.metrics", "search")
    relevant, grades, rankings = [], [], {}
    for entry in lists:
        judged = qrels.get(entry.query_id, {})
        for doc, grade in zip(entry.doc_ids, entry.labels, strict=True):
            if doc in judged and np.isfinite(grade):
                relevant.append(judged[doc] >= RELEVANT_GRADE)
                grades.append(float(grade))
        order = np.argsort(-np.nan_to_num(entry.labels, nan=-np.inf), kind="stable")
        rankings[entry.query_id] = [entry.doc_ids[i] for i in order]
    both_classes = 0 < sum(relevant) < len(relevant)
    auc = float(metrics.roc_auc_score(relevant, grades)) if both_classes else None
    ndcg = evaluate_run(qrels, run_from_rankings(rankings), ("ndcg@10",)).mean["ndcg@10"]
    return {"auc_grade2": auc, "ndcg@10": ndcg, "pairs": len(relevant), "queries": len(rankings)}
