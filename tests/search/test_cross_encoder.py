"""Cross-encoder teachers: candidate lists, training, NaN masking, seeding, save/load, rerank."""

import numpy as np
import pytest
import torch

from winnow.search.cross_encoder import (
    CandidateList,
    CrossEncoderTeacher,
    build_candidate_lists,
)
from winnow.search.datasets import load_beir
from winnow.search.exceptions import SearchInputError
from winnow.search.reranking import rerank
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
    with pytest.raises(SearchInputError, match="head must be one of"):
        CrossEncoderTeacher(head="linear")
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


# -- the zero-shot head -----------------------------------------------------------------------


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.model.named_parameters()}


@pytest.fixture(scope="module")
def zero_shot():
    return CrossEncoderTeacher.from_pretrained(head="zero_shot", max_length=64)


@pytest.fixture(scope="module")
def tuned_zero_shot(zero_shot):
    teacher = make_teacher(head="zero_shot", trainable_layers=1, learning_rate=3e-4)
    return teacher.fit(tiny_lists())


def test_zero_shot_score_is_the_cosine_of_mean_pooled_segments(zero_shot):
    from transformers import AutoModel, AutoTokenizer

    location = zero_shot.model_location()
    tokenizer, encoder = (
        AutoTokenizer.from_pretrained(location),
        AutoModel.from_pretrained(location),
    )
    query, docs = (
        "how hot is lava",
        ["Lava reaches 1200 degrees.", "Boil the pasta for ten minutes."],
    )
    expected = []
    for doc in docs:
        inputs = tokenizer(query, doc, return_tensors="pt")  # [CLS] query [SEP] doc [SEP]
        ids = inputs["input_ids"][0].tolist()
        first_sep = ids.index(tokenizer.sep_token_id)
        with torch.no_grad():
            hidden = encoder(**inputs).last_hidden_state[0].double()
        query_mean = hidden[1:first_sep].mean(dim=0)
        doc_mean = hidden[first_sep + 1 : len(ids) - 1].mean(dim=0)
        expected.append(float(torch.nn.functional.cosine_similarity(query_mean, doc_mean, dim=0)))
    scale = float(zero_shot.model_.model.log_scale.detach().exp())
    assert scale == pytest.approx(20.0)
    np.testing.assert_allclose(zero_shot.score(query, docs), scale * np.array(expected), atol=1e-4)


def test_zero_shot_scores_untrained_and_deterministically(zero_shot):
    docs = tiny_lists()[1].docs
    scores = zero_shot.score("tell me about stock markets", docs)
    again = CrossEncoderTeacher.from_pretrained(head="zero_shot", max_length=64, seed=5)
    np.testing.assert_array_equal(again.score("tell me about stock markets", docs), scores)
    unfitted = make_teacher(head="zero_shot", epochs=0).fit(tiny_lists())  # the config's route
    np.testing.assert_array_equal(unfitted.score("tell me about stock markets", docs), scores)
    assert unfitted.history_ == [] and zero_shot.history_ == []
    on_topic, off_topic = np.split(scores, 2)
    assert on_topic.min() > off_topic.max()


def test_zero_shot_training_lowers_the_loss_and_trains_only_the_top(zero_shot, tuned_zero_shot):
    with torch.no_grad():
        before = float(zero_shot.batch_loss(tiny_lists()))
        after = float(tuned_zero_shot.batch_loss(tiny_lists()))
    assert after < before
    start, end = snapshot(zero_shot.model_), snapshot(tuned_zero_shot.model_)
    changed = {name for name in end if not torch.equal(end[name], start[name])}
    assert "log_scale" in changed and any(n.startswith("bert.encoder.layer.5.") for n in changed)
    assert all(n == "log_scale" or n.startswith("bert.encoder.layer.5.") for n in changed)


def test_zero_shot_save_load_round_trip(tuned_zero_shot, tmp_path):
    docs = tiny_lists()[2].docs
    tuned_zero_shot.save(tmp_path / "zero_shot")
    loaded = CrossEncoderTeacher.load(tmp_path / "zero_shot")
    assert loaded.head == "zero_shot" and loaded.history_ == tuned_zero_shot.history_
    assert torch.equal(loaded.model_.model.log_scale, tuned_zero_shot.model_.model.log_scale)
    np.testing.assert_array_equal(
        loaded.score("volcano", docs), tuned_zero_shot.score("volcano", docs)
    )
