"""The train pipeline's parts: judges from the config, real click logs, the students' unlabelled
lists, config errors that name the field, and saved models with their provenance."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from tests.search.server_helpers import save_untrained_teacher
from tests.search.test_ranker import make_student, tiny_lists, tiny_scores
from winnow.common.exceptions import ModelFolderExistsError, ProvenanceError
from winnow.common.provenance import Provenance, manifest_sha256, read_manifest
from winnow.search.clicks import ClickJudge
from winnow.search.config import ClicksConfig, JudgeConfig, SearchConfig, TrainConfig
from winnow.search.cross_encoder import CrossEncoderTeacher
from winnow.search.datasets import Passage, Query, QuerySplit, load_beir
from winnow.search.reranking import load_ranker, load_rankers
from winnow.search.teachers import CausalLMJudge, ChatJudge, QrelsJudge
from winnow.search.training import (
    TrainingData,
    check_output_dir,
    engagement_judge,
    relevance_judge,
    save_rankers,
    unlabelled_lists,
)


@pytest.fixture
def training(beir_folder):
    data = load_beir(beir_folder)
    candidates = {"q1": np.array(["d4", "d1", ""]), "q3": np.array(["d2", "d3", "d1"])}
    return TrainingData(data, QuerySplit(["q1"], [], ["q2"]), stage=None, candidates=candidates)


def test_relevance_judges_follow_the_config(training, monkeypatch):
    assert isinstance(relevance_judge(JudgeConfig(), training.data), QrelsJudge)
    monkeypatch.setenv("WINNOW_TEST_KEY", "secret")
    config = JudgeConfig(
        kind="chat", model="m", base_url="http://h/v1", api_key_env="WINNOW_TEST_KEY"
    )
    judge = relevance_judge(config, training.data)
    assert isinstance(judge, ChatJudge)
    assert (judge.model, judge.base_url, judge.api_key) == ("m", "http://h/v1", "secret")
    assert judge.on_bad_reply == "missing"
    with pytest.raises(ValidationError, match=r"judge\.model is empty"):
        JudgeConfig(kind="chat")


def test_a_causal_lm_judge_comes_from_the_config(training, llama_folder):
    config = JudgeConfig(kind="causal_lm", model=str(llama_folder), yes="y", no="n")
    judge = relevance_judge(config, training.data)
    assert isinstance(judge, CausalLMJudge) and judge.scale == "probability"
    grades = judge.grade(Query("q1", "where did the cat sit"), [Passage("d1", "the cat sat")])
    assert grades.shape == (1,) and 0 < grades[0] < 1


def test_a_real_click_log_feeds_the_engagement_teacher(training, tmp_path):
    log_file = tmp_path / "clicks.csv"
    log_file.write_text(
        "query,doc_id,position,impressions,clicks\n"
        "where did the cat sit,d1,1,10,5\n"
        "where did the cat sit,d4,2,10,2\n"
    )
    judge, log = engagement_judge(ClicksConfig(log=str(log_file)), training, seed=0)
    assert not log.simulated and log.source == str(log_file)
    grades = judge.grade(
        Query("q1", "where did the cat sit"),
        [Passage("d1", ""), Passage("d4", ""), Passage("d2", "")],
    )
    # IPS with eta=1: clicks / sum of examination r^-1 over impressions
    np.testing.assert_allclose(grades[:2], [5 / 10, 2 / (10 * 0.5)])
    assert math.isnan(grades[2]) and isinstance(judge, ClickJudge)


def test_simulated_clicks_cover_only_the_train_queries(training):
    judge, log = engagement_judge(ClicksConfig(sessions=50), training, seed=0)
    assert log.simulated and set(log.query_ids.tolist()) == {"q1"}
    assert np.isfinite(judge.grade(Query("q1", ""), [Passage("d1", "")])).all()


def test_unlabelled_lists_keep_the_candidate_order_without_labels(training):
    (q1, q3) = unlabelled_lists(training, ["q1", "q3"])
    assert q1.doc_ids == ("d4", "d1") and q3.doc_ids == ("d2", "d3", "d1")  # "" slot skipped
    assert q3.query == "unjudged question" and q3.docs[0] == "dogs chase cats in the park"
    assert np.isnan(q1.labels).all() and len(q1.labels) == 2


def test_student_weights_must_name_known_teachers():
    with pytest.raises(ValidationError, match=r"students\.odd"):
        TrainConfig(students={"odd": {"clicks": 1.0}})
    with pytest.raises(ValidationError, match=r"students\.none"):
        TrainConfig(students={"none": {"relevance": 0.0}})


def test_saved_students_name_their_teachers_and_refuse_replaced_ones(tmp_path):
    rows = []
    student = make_student(epochs=1).fit(tiny_lists(), tiny_scores(), on_step=rows.append)
    assert [row["step"] for row in rows] == [1, 2, 3] and all(row["lr"] > 0 for row in rows)
    assert [row["loss"] for row in rows] == student.history_
    teacher = CrossEncoderTeacher.load(save_untrained_teacher(tmp_path / "made"), quiet=True)
    models = tmp_path / "models"
    rankers = {"student_x": student, "student_x+int8": None, "relevance_teacher": teacher}
    made = Provenance(config={"seed": 0}, data={"queries": ["q1"]})
    saved = save_rankers(rankers, models, made)
    assert list(saved) == ["relevance_teacher", "student_x"]  # teachers first
    parents = read_manifest(models / "student_x")["parents"]
    assert parents[-1]["relative_path"] == "../relevance_teacher"
    assert parents[-1]["manifest_sha256"] == manifest_sha256(models / "relevance_teacher")
    assert load_ranker(models / "student_x").kind == "student"

    config = SearchConfig.model_validate({"train": {"output_dir": str(models)}})
    with pytest.raises(
        ModelFolderExistsError, match=r"\(relevance_teacher, student_x\); pass --over"
    ):
        check_output_dir(config, overwrite=False)
    with pytest.raises(ModelFolderExistsError, match="pass --overwrite"):
        save_rankers({"relevance_teacher": teacher}, models, made)
    check_output_dir(config, overwrite=True)
    save_rankers({"relevance_teacher": teacher}, models, made, overwrite=True)  # a stopped run
    for load in (load_ranker, load_rankers):
        target = models / "student_x" if load is load_ranker else models
        with pytest.raises(ProvenanceError) as caught:
            load(target)
        message = str(caught.value)
        assert "student_x was made from" in message and "relevance_teacher" in message
        assert "--overwrite" in message
    assert load_ranker(models / "relevance_teacher").kind == "teacher"
