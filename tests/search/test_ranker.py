"""Student ranker: pruning, the multi-teacher loss (closed form, NaN masks), training, save/load."""

import numpy as np
import pytest
import torch

from winnow.search.cross_encoder import CandidateList, CrossEncoderTeacher, load_cross_encoder
from winnow.search.exceptions import SearchInputError
from winnow.search.losses import listwise_softmax_loss, standardize_scores
from winnow.search.ranker import StudentRanker, distillation_loss, precompute_teacher_scores

TOPICS = ("cats and kittens", "stock markets", "volcano eruptions")
RELEVANCE = np.array([3.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
ENGAGEMENT = np.array([0.5, np.nan, 0.9, 0.1, 0.3, np.nan, 0.0, 0.2])


def tiny_lists(extra_unscored: int = 0) -> list[CandidateList]:
    """3 queries x 8 candidates (4 on topic, 4 off topic), plus optional unscored extras."""
    lists = []
    for q, topic in enumerate(TOPICS):
        docs = [f"{topic}: fact {j} about {topic}" for j in range(4)]
        docs += [f"an unrelated note {j} on cooking pasta" for j in range(4)]
        docs += [f"noise {j} " * (j + 2) for j in range(extra_unscored)]
        ids = tuple(f"q{q}d{j}" for j in range(len(docs)))
        labels = np.full(len(docs), np.nan)
        lists.append(CandidateList(f"q{q}", f"tell me about {topic}", ids, tuple(docs), labels))
    return lists


def tiny_scores(extra_unscored: int = 0) -> dict:
    pad = np.full(extra_unscored, np.nan)
    return {
        "relevance": [np.concatenate([RELEVANCE, pad]) for _ in TOPICS],
        "engagement": [np.concatenate([ENGAGEMENT, pad]) for _ in TOPICS],
    }


def make_student(**kwargs):
    settings = dict(
        max_length=32,
        epochs=2,
        learning_rate=3e-4,
        warmup_ratio=0.0,
        teacher_weights={"relevance": 1.0},
        quiet=True,
        num_threads=1,
    )
    return StudentRanker(**{**settings, **kwargs})


@pytest.fixture(scope="module")
def fitted():
    return make_student().fit(tiny_lists(), tiny_scores())


@pytest.fixture(scope="module")
def both():
    weights = {"relevance": 1.0, "engagement": 0.5}
    return make_student(teacher_weights=weights, epochs=1).fit(tiny_lists(), tiny_scores())


def test_one_teacher_of_weight_one_is_the_listwise_loss():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.normal(size=(2, 5)))
    teacher = torch.tensor(rng.normal(size=(2, 5)))
    mask = torch.ones_like(scores, dtype=torch.bool)
    raw = distillation_loss(scores, teacher[None], [1.0], temperature=0.5, target_norm="none")
    torch.testing.assert_close(raw, listwise_softmax_loss(scores, teacher, mask, 0.5))
    got = distillation_loss(scores, teacher[None], [1.0], temperature=0.5)  # standardized
    expected = listwise_softmax_loss(scores, standardize_scores(teacher, mask), mask, 0.5)
    torch.testing.assert_close(got, expected)


def test_standardized_teachers_weigh_what_their_weights_say():
    rng = np.random.default_rng(2)
    scores = torch.tensor(rng.normal(size=(2, 6)))
    teacher = torch.tensor(rng.normal(size=(2, 6)))
    teacher[1, 4:] = torch.nan
    flat = 0.05 * teacher + 3.0  # the same order, logits spread 20 times less
    both = distillation_loss(scores, torch.stack([teacher, flat]), [1.0, 1.0])
    alone = distillation_loss(scores, teacher[None], [2.0])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-4)
    raw = distillation_loss(scores, torch.stack([teacher, flat]), [1.0, 1.0], target_norm="none")
    assert not torch.allclose(raw, alone, rtol=1e-2)


def test_nan_teacher_entries_are_masked_out():
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.normal(size=(1, 6)), requires_grad=True)
    relevance = torch.tensor(rng.normal(size=(1, 6)))
    engagement = torch.tensor(rng.normal(size=(1, 6)))
    engagement[0, 1] = torch.nan  # engagement has no score for doc 1
    relevance[0, 5] = engagement[0, 5] = torch.nan  # no teacher scores doc 5
    loss = distillation_loss(scores, torch.stack([relevance, engagement]), [1.0, 0.5])
    loss.sum().backward()
    keep_r, keep_e = [0, 1, 2, 3, 4], [0, 2, 3, 4]
    ones = torch.ones((1, 5), dtype=torch.bool)
    relevance_z = standardize_scores(relevance[:, keep_r], ones)
    engagement_z = standardize_scores(engagement[:, keep_e], ones[:, :4])
    expected = listwise_softmax_loss(scores[:, keep_r], relevance_z, ones)
    expected = expected + 0.5 * listwise_softmax_loss(scores[:, keep_e], engagement_z, ones[:, :4])
    torch.testing.assert_close(loss.detach(), expected.detach())
    assert scores.grad[0, 5] == 0 and torch.isfinite(scores.grad).all()
    moved = scores.detach().clone()
    moved[0, 5] = 100.0
    torch.testing.assert_close(
        distillation_loss(moved, torch.stack([relevance, engagement]), [1.0, 0.5]), loss.detach()
    )


def test_a_teacher_without_scores_in_a_list_adds_nothing():
    scores = torch.tensor([[0.3, -1.0, 2.0]], requires_grad=True)
    relevance = torch.tensor([[1.0, 0.0, 2.0]])
    silent = torch.full((1, 3), torch.nan)
    alone = distillation_loss(scores, relevance[None], [1.0])
    paired = distillation_loss(scores, torch.stack([relevance, silent]), [1.0, 5.0])
    torch.testing.assert_close(paired, alone)
    (grad_alone,) = torch.autograd.grad(alone.sum(), scores)
    (grad_paired,) = torch.autograd.grad(paired.sum(), scores)
    torch.testing.assert_close(grad_paired, grad_alone)


def test_student_is_pruned_and_smaller(fitted):
    network = fitted.network_.model_.model
    assert len(network.bert.encoder.layer) == 2 and network.config.num_hidden_layers == 2
    teacher = load_cross_encoder(CrossEncoderTeacher().model_location(), 32, "cpu")
    assert len(teacher.model.bert.encoder.layer) == 6
    student_params = sum(p.numel() for p in fitted.network_.model_.parameters())
    teacher_params = sum(p.numel() for p in teacher.parameters())
    assert student_params < teacher_params
    assert fitted.network_.model_.max_seq_length == 32


def test_distillation_lowers_the_loss(fitted):
    history = np.array(fitted.history_)
    assert history.shape == (6,) and np.isfinite(history).all()
    assert history[3:].mean() < history[:3].mean()  # epoch 2 below epoch 1, same lists


def test_batch_loss_is_the_listwise_loss_on_student_scores(both):
    lists, scores = tiny_lists()[:1], tiny_scores()
    targets = [np.stack([scores["relevance"][0], scores["engagement"][0]])]
    with torch.no_grad():
        got = both.batch_loss(lists, targets)  # eval mode after fit: no dropout
    student = torch.tensor(both.score(lists[0].query, lists[0].docs))[None]
    relevance = torch.tensor(RELEVANCE)[None]
    engagement = torch.tensor(ENGAGEMENT)[None]
    seen_r, seen_e = torch.isfinite(relevance), torch.isfinite(engagement)
    relevance_z = standardize_scores(relevance, seen_r)
    engagement_z = standardize_scores(torch.nan_to_num(engagement), seen_e)
    expected = listwise_softmax_loss(student, relevance_z, seen_r)
    expected = expected + 0.5 * listwise_softmax_loss(student, engagement_z, seen_e)
    torch.testing.assert_close(got.double(), expected[0], atol=1e-5, rtol=1e-5)


def test_zero_weight_teacher_changes_nothing(fitted):
    weights = {"relevance": 1.0, "engagement": 0.0}
    again = make_student(teacher_weights=weights).fit(tiny_lists(), tiny_scores())
    assert again.teachers_ == ["relevance"] and again.history_ == fitted.history_


def test_unscored_candidates_never_reach_the_student(both):
    weights = {"relevance": 1.0, "engagement": 0.5}
    padded = make_student(teacher_weights=weights, epochs=1)
    padded.fit(tiny_lists(extra_unscored=3), tiny_scores(extra_unscored=3))
    assert padded.history_ == both.history_


def test_deterministic_under_the_seed(fitted):
    again = make_student().fit(tiny_lists(), tiny_scores())
    docs = tiny_lists()[0].docs
    assert again.history_ == fitted.history_
    np.testing.assert_array_equal(again.score("cats", docs), fitted.score("cats", docs))
    other = make_student(seed=1).fit(tiny_lists(), tiny_scores())
    assert other.history_ != fitted.history_


def test_save_load_round_trip(both, tmp_path):
    docs = tiny_lists()[2].docs
    both.save(tmp_path / "student")
    loaded = StudentRanker.load(tmp_path / "student")
    assert len(loaded.network_.model_.model.bert.encoder.layer) == 2
    np.testing.assert_array_equal(loaded.score("volcano", docs), both.score("volcano", docs))
    assert loaded.history_ == both.history_ and loaded.teachers_ == both.teachers_
    assert loaded.teacher_weights == both.teacher_weights and loaded.max_length == 32
    assert loaded.get_params() == both.get_params() | {"model": str(tmp_path / "student")}
    one = {name: lists[:1] for name, lists in tiny_scores().items()}
    raw = make_student(target_norm="none", epochs=1).fit(tiny_lists()[:1], one)
    raw.save(tmp_path / "raw")
    assert StudentRanker.load(tmp_path / "raw").target_norm == "none"


def test_a_zero_shot_head_student_starts_from_the_pruned_segment_cosine(tmp_path):
    """Before any step its scores are the pruned encoder's scaled segment cosine (it ranks at
    once); it distils, saves and loads as the zero-shot kind, with the learnt scale."""
    from winnow.search.zero_shot import INITIAL_SCALE, ZeroShotCrossEncoder, load_zero_shot

    lists = tiny_lists()
    student = make_student(head="zero_shot", epochs=1, learning_rate=1e-3)
    untrained = make_student(head="zero_shot", learning_rate=1e-12, warmup_ratio=0.0, epochs=1)
    untrained.fit(lists[:1], {"relevance": tiny_scores()["relevance"][:1]})
    reference = load_zero_shot(CrossEncoderTeacher().model_location(), 32, "cpu")
    reference.model.bert.encoder.layer = reference.model.bert.encoder.layer[:2]
    docs = lists[0].docs
    with torch.no_grad():
        features = reference.preprocess([(lists[0].query, d) for d in docs])
        expected = reference(features)["scores"].double().numpy()
    np.testing.assert_allclose(untrained.score(lists[0].query, docs), expected, atol=1e-4)
    scale = untrained.network_.model_.model.log_scale.detach().exp()
    assert abs(float(scale) - INITIAL_SCALE) < 1e-6
    student.fit(lists, tiny_scores())
    assert isinstance(student.network_.model_, ZeroShotCrossEncoder)
    student.save(tmp_path / "zs")
    loaded = StudentRanker.load(tmp_path / "zs")
    assert loaded.head == "zero_shot" and isinstance(loaded.network_.model_, ZeroShotCrossEncoder)
    assert len(loaded.network_.model_.model.bert.encoder.layer) == 2
    np.testing.assert_allclose(loaded.score("volcano", docs), student.score("volcano", docs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"teacher_weights": {"relevance": -1.0}}, "teacher_weights"),
        ({"teacher_weights": {"relevance": 0.0}}, "teacher_weights"),
        ({"teacher_weights": {}}, "teacher_weights"),
        ({"loss": "hinge"}, "loss"),
        ({"target_norm": "minmax"}, "target_norm must be one of"),
        ({"max_length": 4}, "max_length"),
    ],
)
def test_bad_parameters_fail_at_construction(kwargs, message):
    with pytest.raises(SearchInputError, match=message):
        StudentRanker(**kwargs)


def test_bad_teacher_scores_fail_before_loading():
    student = make_student(teacher_weights={"relevance": 1.0, "engagement": 1.0})
    with pytest.raises(SearchInputError, match="engagement"):
        student.fit(tiny_lists(), {"relevance": tiny_scores()["relevance"]})
    short = {name: [s[:5] for s in lists] for name, lists in tiny_scores().items()}
    with pytest.raises(SearchInputError, match="shape"):
        student.fit(tiny_lists(), short)
    with pytest.raises(SearchInputError, match="not fitted"):
        student.score("q", ["d"])


def test_precompute_teacher_scores_aligns_with_the_lists():
    class LengthTeacher:
        def score(self, query, docs):
            return [float(len(doc)) for doc in docs]

    lists = tiny_lists()
    scores = precompute_teacher_scores({"length": LengthTeacher()}, lists)
    assert list(scores) == ["length"] and len(scores["length"]) == len(lists)
    np.testing.assert_array_equal(scores["length"][1], [len(d) for d in lists[1].docs])
