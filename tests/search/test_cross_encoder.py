"""Cross-encoder teachers: candidate lists, training, NaN masking, seeding, save/load, rerank."""

import numpy as np
import pytest

from winnow.search.cross_encoder import (
    CandidateList,
    CrossEncoderTeacher,
    build_candidate_lists,
    rerank,
)
from winnow.search.datasets import load_beir
from winnow.search.exceptions import SearchInputError
from winnow.search.teachers import QrelsJudge

TOPICS = ("cats and kittens", "stock markets", "volcano eruptions")
GRADES = np.array([3, 2, 1, 1, 0, 0, 0, 0], dtype=float)


def tiny_lists(extra_unlabelled: int = 0) -> list[CandidateList]:
    """3 queries x 8 candidates (4 on topic, graded 3..1; 4 off topic, 0); optional NaN extras."""
    lists = []
    for q, topic in enumerate(TOPICS):
        docs = [f"{topic}: fact {j} about {topic}" for j in range(4)]
        docs += [f"an unrelated note {j} on cooking pasta" for j in range(4)]
        docs += [f"noise {j} " * (j + 2) for j in range(extra_unlabelled)]
        labels = np.concatenate([GRADES, np.full(extra_unlabelled, np.nan)])
        ids = tuple(f"q{q}d{j}" for j in range(len(docs)))
        lists.append(CandidateList(f"q{q}", f"tell me about {topic}", ids, tuple(docs), labels))
    return lists


def make_teacher(**kwargs):
    settings = dict(max_length=64, epochs=2, learning_rate=1e-4, warmup_ratio=0.0, quiet=True)
    return CrossEncoderTeacher(**{**settings, **kwargs})


@pytest.fixture(scope="module")
def fitted():
    return make_teacher().fit(tiny_lists())


def test_training_lowers_the_loss(fitted):
    history = np.array(fitted.history_)
    assert history.shape == (6,) and np.isfinite(history).all()
    assert history[3:].mean() < history[:3].mean()  # epoch 2 below epoch 1, same lists
    on_topic, off_topic = np.split(
        fitted.score("tell me about stock markets", tiny_lists()[1].docs), 2
    )
    assert on_topic.min() > off_topic.max()


def test_training_is_deterministic_under_the_seed(fitted):
    again = make_teacher().fit(tiny_lists())
    assert again.history_ == fitted.history_
    docs = tiny_lists()[0].docs
    np.testing.assert_array_equal(again.score("cats", docs), fitted.score("cats", docs))


def test_nan_labels_are_masked_out(fitted):
    padded = make_teacher().fit(tiny_lists(extra_unlabelled=3))
    assert padded.history_ == fitted.history_  # the unlabelled texts never reach the model


def test_save_load_round_trip(fitted, tmp_path):
    docs = tiny_lists()[2].docs
    fitted.save(tmp_path / "teacher")
    loaded = CrossEncoderTeacher.load(tmp_path / "teacher")
    np.testing.assert_allclose(
        loaded.score("volcano", docs), fitted.score("volcano", docs), atol=1e-6
    )
    assert loaded.history_ == fitted.history_ and loaded.max_length == 64
    assert loaded.name == "relevance"


def test_build_candidate_lists_from_a_retriever(beir_folder):
    data = load_beir(beir_folder)

    class FakeRetriever:
        def search(self, queries, k):
            ids = np.array([["d1", "d2", "d4", ""], ["d3", "d1", "d2", "d4"]])[:, :k]
            return ids, np.zeros(ids.shape, dtype=np.float32)

    lists = build_candidate_lists(data, ["q1", "q2"], QrelsJudge(data.qrels), FakeRetriever(), k=4)
    assert [entry.doc_ids for entry in lists] == [("d1", "d2", "d4"), ("d3", "d1", "d2", "d4")]
    assert lists[0].labels.tolist() == [3.0, 0.0, 1.0] and lists[0].docs[0].startswith("Cats ")
    missing = QrelsJudge(data.qrels, unjudged="missing")
    kept = build_candidate_lists(data, ["q1", "q2"], missing, FakeRetriever(), k=4)
    assert [entry.query_id for entry in kept] == ["q1"]  # q2 has one labelled candidate
    assert np.isnan(kept[0].labels[1])
    with pytest.raises(SearchInputError, match="candidates must be"):
        build_candidate_lists(data, ["q1"], missing, np.array([["d1"], ["d2"]]))


def test_rerank_orders_by_score(beir_folder):
    data = load_beir(beir_folder)

    class LengthScorer:
        def score(self, query, docs):
            return np.array([len(doc.text) for doc in docs], dtype=float)

    ids, scores = rerank(LengthScorer(), data, ["q1"], np.array([["d1", "d3", ""]]))
    assert ids.tolist() == [["d3", "d1", ""]]
    assert scores[0, 0] > scores[0, 1] and scores[0, 2] == -np.inf


def test_validation_before_loading():
    with pytest.raises(SearchInputError, match="loss must be one of"):
        CrossEncoderTeacher(loss="hinge")
    with pytest.raises(SearchInputError, match="max_length must be an int"):
        CrossEncoderTeacher(max_length=0)
    with pytest.raises(SearchInputError, match="not fitted"):
        CrossEncoderTeacher().score("q", ["d"])
    with pytest.raises(SearchInputError, match="no labelled candidate"):
        CrossEncoderTeacher().fit([CandidateList("q", "q", ("d",), ("d",), np.array([np.nan]))])


def test_trainable_layers_freezes_everything_below_the_top_layers():
    teacher = make_teacher(epochs=1, trainable_layers=1)
    before = None

    def snapshot(model):
        return {name: p.detach().clone() for name, p in model.model.named_parameters()}

    original_optimizer = teacher._optimizer

    def record_then_optimise(total):  # the weights as loaded, before the first step
        nonlocal before
        before = snapshot(teacher.model_)
        return original_optimizer(total)

    teacher._optimizer = record_then_optimise
    teacher.fit(tiny_lists())
    after = snapshot(teacher.model_)
    changed = {name for name in after if not np.array_equal(after[name], before[name])}
    assert changed, "nothing trained"
    assert all(
        name.startswith(("bert.encoder.layer.5.", "bert.pooler.", "classifier."))
        for name in changed
    )
    assert any(name.startswith("classifier.") for name in changed)
    assert any(name.startswith("bert.encoder.layer.5.") for name in changed)
    with pytest.raises(SearchInputError, match="trainable_layers must be <= 6"):
        make_teacher(trainable_layers=7).fit(tiny_lists())
    with pytest.raises(SearchInputError, match="trainable_layers must be None or an int"):
        make_teacher(trainable_layers=-1)
