"""Cross-validation wiring: a reranker that memorises its training labels must not know the
held-out queries' labels, settings are chosen on the inner split only, and first stages pool."""

from types import SimpleNamespace

import numpy as np
import pytest

from winnow.search.config import SearchConfig
from winnow.search.crossval import choose_on_inner, cross_validate, fold_training
from winnow.search.datasets import BeirDataset, QuerySplit
from winnow.search.folds import make_folds
from winnow.search.training import TrainingData

N_QUERIES, N_DOCS = 12, 6


def synthetic_training() -> TrainingData:
    """12 queries over 6 documents; each query's best document sits last in the dense order."""
    docs = [f"d{i}" for i in range(N_DOCS)]
    queries = [f"q{i:02d}" for i in range(N_QUERIES)]
    qrels = {q: {docs[-1]: 3, docs[0]: 1} for q in queries}
    data = BeirDataset(docs, [""] * N_DOCS, [f"text {d}" for d in docs], queries, queries, qrels)
    dense_order = np.array(docs)

    class FixedRetriever:
        def search(self, texts, k):
            ids = np.tile(dense_order[:k], (len(texts), 1))
            return ids, np.zeros(ids.shape)

    stage = SimpleNamespace(retrievers={"dense": FixedRetriever()})
    candidates = {q: dense_order.copy() for q in queries}
    return TrainingData(data, QuerySplit([], [], []), stage, candidates)


class MemorisingRanker:
    """Scores a pair by the grade it saw in training, 0 for anything unseen."""

    def __init__(self, data, query_ids):
        self.known = {
            (data.query_text(q), d): g for q in query_ids for d, g in data.qrels[q].items()
        }
        self.doc_of_text = {t: d for d, t in zip(data.doc_ids, data.passages, strict=True)}

    def score(self, query, docs):
        return np.array(
            [self.known.get((query, self.doc_of_text[doc.text]), 0.0) for doc in docs], dtype=float
        )


def test_held_out_queries_are_never_in_their_folds_training_labels():
    training = synthetic_training()
    config = SearchConfig.model_validate({"train": {"candidates": 6}, "recall_at": 6})
    folds = make_folds(training.data.judged_query_ids, n_folds=3, seed=0)
    seen = []

    def train_fold(config, view, dense, quiet):
        seen.append((set(view.split.train), set(view.split.dev), set(view.split.test)))
        labelled = [*view.split.train, *view.split.dev]
        return {"memoriser": MemorisingRanker(view.data, labelled)}, {}

    rankings, results = cross_validate(config, training, folds, train_fold, quiet=True)
    for (fit, inner, test), fold in zip(seen, folds, strict=True):
        assert not (fit | inner) & test and test == set(fold.test)
    # a memoriser that never saw a held-out query's labels keeps the dense order for it
    assert rankings["memoriser"] == rankings["dense"]
    assert set(rankings["dense"]) == set(training.data.judged_query_ids)
    assert [r.fold for r in results] == folds


def test_a_leaking_fold_would_be_visible():
    training = synthetic_training()
    config = SearchConfig.model_validate({"train": {"candidates": 6}, "recall_at": 6})
    folds = make_folds(training.data.judged_query_ids, n_folds=3, seed=0)

    def leaky(config, view, dense, quiet):
        return {"memoriser": MemorisingRanker(view.data, view.data.judged_query_ids)}, {}

    rankings, _ = cross_validate(config, training, folds, leaky, quiet=True)
    assert all(ranked[0] == f"d{N_DOCS - 1}" for ranked in rankings["memoriser"].values())


def test_choose_on_inner_uses_only_the_inner_queries():
    training = synthetic_training()
    fold = make_folds(training.data.judged_query_ids, n_folds=3, seed=0)[0]
    view = fold_training(training, fold)
    dense = {q: [f"d{i}" for i in range(N_DOCS)] for q in training.data.judged_query_ids}
    knows_inner = MemorisingRanker(view.data, fold.inner)
    knows_test = MemorisingRanker(view.data, fold.test)
    index, values = choose_on_inner([knows_test, knows_inner], view, fold.inner, dense, depth=6)
    assert index == 1 and values[1] == pytest.approx(1.0) and values[0] < 1.0
