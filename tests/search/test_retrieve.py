"""Retrieval against references: brute-force top-k, HNSW recall, BM25 on a hand corpus, fusion."""

import numpy as np
import pytest

from winnow.search.datasets import load_beir
from winnow.search.exceptions import SearchInputError
from winnow.search.retrieve import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    Retriever,
    interpolate_scores,
    min_max_normalise,
    reciprocal_rank_fusion,
    stemmer_available,
)


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_top_k(queries, docs, k):
    scores = queries @ docs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_flat_index_equals_numpy_top_k():
    rng = np.random.default_rng(0)
    docs, queries = unit_rows(rng, 500, 32), unit_rows(rng, 20, 32)
    doc_ids = [f"d{i}" for i in range(500)]
    retriever = DenseRetriever(index="flat").fit(doc_ids, docs)
    ids, scores = retriever.search(queries, 10)
    order, expected = brute_force_top_k(queries, docs, 10)
    assert ids.shape == scores.shape == (20, 10) and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, np.asarray(doc_ids)[order])
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_hnsw_recall_at_10_against_exact():
    rng = np.random.default_rng(1)
    docs, queries = unit_rows(rng, 2000, 32), unit_rows(rng, 50, 32)
    doc_ids = [str(i) for i in range(2000)]
    exact, _ = DenseRetriever(index="flat").fit(doc_ids, docs).search(queries, 10)
    approx, scores = (
        DenseRetriever(index="hnsw", ef_search=64).fit(doc_ids, docs).search(queries, 10)
    )
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_k_beyond_corpus_pads_with_empty_slots():
    rng = np.random.default_rng(2)
    retriever = DenseRetriever().fit(["a", "b", "c"], unit_rows(rng, 3, 4))
    ids, scores = retriever.search(unit_rows(rng, 2, 4), 5)
    assert ids.shape == (2, 5)
    assert (ids[:, 3:] == "").all() and np.isneginf(scores[:, 3:]).all()
    assert set(ids[0, :3]) == {"a", "b", "c"}
    bm25 = BM25Retriever().fit(["a", "b"], ["red apple", "green pear"])
    ids, scores = bm25.search(["apple"], 4)
    assert ids.tolist() == [["a", "b", "", ""]] and np.isneginf(scores[0, 2:]).all()


def test_bm25_ranks_the_document_with_the_query_terms_first():
    docs = [
        "the weather today is sunny and warm",
        "a recipe for chocolate cake with cocoa",
        "how photosynthesis converts sunlight into chemical energy in plants",
        "football results from the weekend",
    ]
    retriever = BM25Retriever().fit(["w", "c", "p", "f"], docs)
    ids, scores = retriever.search(["photosynthesis sunlight energy", "chocolate cake"], 2)
    assert ids[:, 0].tolist() == ["p", "c"]
    assert (scores[:, 0] > 0).all() and (scores[:, 0] > scores[:, 1]).all()
    assert retriever.stemmer_ == ("english" if stemmer_available() else None)


def test_explicit_stemmer_needs_pystemmer():
    retriever = BM25Retriever(stemmer="english")
    if stemmer_available():
        retriever.fit(["a"], ["running"])
        assert retriever.stemmer_ == "english"
    else:
        with pytest.raises(ImportError, match="Stemmer"):
            retriever.fit(["a"], ["running"])


def test_rrf_matches_hand_computation():
    run_a = np.array([["d1", "d2", "d3"]])
    run_b = np.array([["d3", "d1", "d4"]])
    ids, scores = reciprocal_rank_fusion([run_a, run_b], k=4, rrf_k=60)
    # d1: 1/61 + 1/62; d3: 1/63 + 1/61; d2: 1/62; d4: 1/63
    expected = {"d1": 1 / 61 + 1 / 62, "d3": 1 / 63 + 1 / 61, "d2": 1 / 62, "d4": 1 / 63}
    assert ids.tolist() == [["d1", "d3", "d2", "d4"]]
    np.testing.assert_allclose(scores[0], [expected[d] for d in ids[0]], rtol=1e-6)
    weighted_ids, _ = reciprocal_rank_fusion([run_a, run_b], k=2, weights=(1.0, 3.0))
    assert weighted_ids.tolist() == [["d3", "d1"]]  # d3: 1/63 + 3/61 > d1: 1/61 + 3/62


def test_interpolation_matches_hand_computation():
    run_a = (np.array([["d1", "d2", "d3"]]), np.array([[10.0, 6.0, 2.0]]))
    run_b = (np.array([["d2", "d4", ""]]), np.array([[0.9, 0.5, -np.inf]]))
    ids, scores = interpolate_scores([run_a, run_b], k=4, weights=(0.25, 0.75))
    # min-max: a -> d1 1, d2 0.5, d3 0; b -> d2 1, d4 0. Then 0.25 * a + 0.75 * b.
    expected = {"d1": 0.25, "d2": 0.25 * 0.5 + 0.75, "d3": 0.0, "d4": 0.0}
    assert ids[0, :2].tolist() == ["d2", "d1"]
    np.testing.assert_allclose(scores[0], [expected[d] for d in ids[0]], atol=1e-6)
    assert set(ids[0, 2:]) == {"d3", "d4"}


def test_min_max_normalise_constant_rows_and_padding():
    normalised = min_max_normalise(np.array([[3.0, 1.0, -np.inf], [2.0, 2.0, 2.0]]))
    np.testing.assert_array_equal(normalised, [[1.0, 0.0, -np.inf], [0.0, 0.0, 0.0]])


class FakeTextEncoder:
    """Bag of hashed words: texts sharing words get a positive inner product."""

    name = "fake-bag-of-words"

    def encode(self, texts, quiet=False):
        rows = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i, sum(map(ord, word)) % 64] += 1.0
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


@pytest.mark.parametrize("fusion", ["rrf", "interpolate"])
def test_hybrid_on_shipped_slice(fusion):
    data = load_beir("search/msmarco_trecdl19_subset")
    doc_ids, passages = data.doc_ids[:200], data.passages[:200]
    bm25 = BM25Retriever().fit(doc_ids, passages)
    dense = DenseRetriever(FakeTextEncoder(), cache_dir=None).fit(doc_ids, passages)
    hybrid = HybridRetriever([bm25, dense], fusion=fusion, candidates=20)
    assert all(isinstance(r, Retriever) for r in (bm25, dense, hybrid))
    ids, scores = hybrid.search(passages[:3], 5)  # a passage is its own best match
    assert ids.shape == (3, 5) and ids[:, 0].tolist() == doc_ids[:3]
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_constructor_and_call_errors():
    with pytest.raises(SearchInputError, match="index must be one of"):
        DenseRetriever(index="ivf")
    with pytest.raises(SearchInputError, match="not fitted"):
        DenseRetriever().search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(SearchInputError, match="fusion must be one of"):
        HybridRetriever([BM25Retriever()], fusion="max")
    with pytest.raises(SearchInputError, match="k must be an int"):
        BM25Retriever().fit(["a"], ["word"]).search(["word"], 0)
    with pytest.raises(SearchInputError, match="no document has an indexable word"):
        BM25Retriever().fit(["a", "b"], ["x", "the"])
    with pytest.raises(SearchInputError, match="dimension"):
        DenseRetriever().fit(["a"], np.ones((1, 4), np.float32)).search(np.ones((1, 3)), 1)
    with pytest.raises(SearchInputError, match="unique"):
        BM25Retriever().fit(["a", "a"], ["x", "y"])


def test_dense_retriever_embeds_texts_through_the_cache(tmp_path):
    docs = ["red apple pie", "green pear tart", "stock market news"]
    retriever = DenseRetriever(FakeTextEncoder(), cache_dir=tmp_path).fit(["a", "b", "c"], docs)
    ids, _ = retriever.search(["apple pie recipe", "market news today"], 1)
    assert ids[:, 0].tolist() == ["a", "c"]
    assert len(list(tmp_path.glob("*/batch-*.npz"))) == 2  # documents and queries, one file each
