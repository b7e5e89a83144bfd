"""The search jobs end to end on a small slice: eval report, index folder, clear errors."""

import json
import shutil
from pathlib import Path

import faiss
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.config import load_config
from winnow.common.provenance import MANIFEST_FILE, manifest_sha256, read_manifest
from winnow.common.runs import read_step_metrics
from winnow.search.config import SearchConfig, TrainConfig
from winnow.search.datasets import load_beir
from winnow.search.jobs import evaluated_queries, select_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def data():
    return load_beir("search/msmarco_trecdl19_subset")


def test_slice_keeps_judged_passages_first_then_seeded_distractors(data):
    queries = evaluated_queries(data, load_config(SearchConfig))
    judged = {doc for qid in queries for doc in data.qrels[qid]}
    corpus = select_corpus(data, queries[:1], max_passages=200, seed=0)
    first_judged = set(data.qrels[queries[0]])
    assert len(corpus.doc_ids) == 200 == len(set(corpus.doc_ids))
    assert first_judged <= set(corpus.doc_ids)
    assert corpus.doc_ids == select_corpus(data, queries[:1], 200, seed=0).doc_ids
    assert corpus.doc_ids != select_corpus(data, queries[:1], 200, seed=1).doc_ids
    assert len(judged) > 0


def test_evaluated_queries_are_the_split_and_never_train(data):
    config = load_config(SearchConfig)
    test = evaluated_queries(data, config)
    train = evaluated_queries(data, load_config(SearchConfig, overrides=["queries=train"]))
    assert test and train and not set(test) & set(train)
    everything = evaluated_queries(data, load_config(SearchConfig, overrides=["queries=all"]))
    assert len(everything) == 43


def slice_flags(tmp_path) -> list[str]:
    """A 60-passage slice, with the embedding cache and saved models inside ``tmp_path``."""
    return [
        "--set",
        "data.max_passages=60",
        "--set",
        f"encoder.cache_dir={tmp_path / 'cache'}",
        "--set",
        f"train.output_dir={tmp_path / 'models'}",
    ]


def test_eval_and_index_commands_on_a_slice(tmp_path):
    common = slice_flags(tmp_path)
    result = runner.invoke(
        app, ["search", "eval", "--out", str(tmp_path / "runs"), "--quiet", *common]
    )
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert set(summary["systems"]) == {"bm25", "dense", "hybrid_rrf", "hybrid_interpolate"}
    for values in summary["systems"].values():
        assert 0 <= values["ndcg@10"] <= 1 and 0 <= values["recall@100"] <= 1
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "retrieval_means.png",
        "retrieval_per_query.png",
    ]
    index_dir = tmp_path / "index"
    result = runner.invoke(
        app, ["search", "index", "--quiet", "--set", f"index_dir={index_dir}", *common]
    )
    assert result.exit_code == 0, result.output
    assert faiss.read_index(str(index_dir / "index.faiss")).ntotal == 60
    assert len(json.loads((index_dir / "doc_ids.json").read_text())) == 60


def test_empty_split_is_one_clear_line(tmp_path):
    result = runner.invoke(
        app,
        ["search", "eval", "--out", str(tmp_path), "--set", "data.split=[1.0, 0.0, 0.0]"],
    )
    assert result.exit_code == 2
    assert "test split is empty" in result.output and "Traceback" not in result.output


def tiny_train_flags(tmp_path, teacher_epochs: int = 1) -> list[str]:
    """Tiny settings (2 folds, 4 candidates, 1 epoch, 32 word pieces): the pipeline, not the
    quality."""
    return [
        *slice_flags(tmp_path),
        *("--set", "train.candidates=4", "--set", f"train.teacher.epochs={teacher_epochs}"),
        *("--set", "train.teacher.max_length=32", "--set", "train.student.epochs=1"),
        *("--set", "train.student.max_length=32", "--set", "train.clicks.sessions=20"),
        *("--set", "train.cv.folds=2", "--set", "train.cv.bootstrap_resamples=200"),
    ]


def train_run(out, flags: list[str]):
    """`winnow search train` into ``out``; its run folder and the summary of its metrics."""
    result = runner.invoke(app, ["search", "train", "--out", str(out), "--quiet", *flags])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    return run, json.loads((run / "metrics.json").read_text())["summary"]


def test_train_then_eval_reports_every_reranker(tmp_path):
    tiny = tiny_train_flags(tmp_path)
    out = tmp_path / "runs"
    run, summary = train_run(out, tiny)
    trained = {
        "relevance_teacher",
        "engagement_teacher",
        "student_relevance_only",
        "student_engagement_only",
        "student_both",
    }
    systems = {"bm25", "dense", "hybrid_rrf", "hybrid_interpolate", "student_both+int8", *trained}
    assert set(summary["pooled"]) == systems
    assert set(summary["versus_dense"]) == systems - {"dense"}
    assert summary["folds"] == 2 and summary["queries"] == 43
    tested = [qid for fold in summary["fold_queries"] for qid in fold["test"]]
    assert len(tested) == len(set(tested)) == 43
    for fold in summary["fold_queries"]:
        assert not set(fold["test"]) & set(fold["fit"] + fold["inner"])
    assert summary["clicks"]["simulated"] is True
    for name in trained:
        assert 0 <= summary["pooled"][name]["ndcg@10"] <= 1
        assert (tmp_path / "models" / name / "config.json").is_file()
    assert set(summary["saved"]) == trained
    report = (run / "report.md").read_text()
    assert "SIMULATED" in report and "| student_both |" in report and "[95% CI]" in report
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "cv_folds.png",
        "cv_ndcg.png",
        "training_loss.png",
    ]

    result = runner.invoke(app, ["search", "eval", "--out", str(out), "--quiet", *tiny])
    assert result.exit_code == 0, result.output
    (evaluation,) = [p for p in out.iterdir() if p.name.startswith("search-eval")]
    systems = json.loads((evaluation / "metrics.json").read_text())["summary"]["systems"]
    assert {f"dense+{name}" for name in trained} <= set(systems)
    assert "| dense+student_both |" in (evaluation / "report.md").read_text()
    assert_steps_logged_and_models_traced(run, tmp_path / "models", trained)

    runs_before = sorted(out.iterdir())
    again = runner.invoke(app, ["search", "train", "--out", str(out), "--quiet", *tiny])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert "already holds saved rerankers" in " ".join(again.output.split())
    assert sorted(out.iterdir()) == runs_before  # refused before a run folder was made
    # A run stopped after saving its teachers: a new relevance teacher beside the old students.
    manifest = tmp_path / "models" / "relevance_teacher" / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"created": "', '"created": "new '))
    refused = runner.invoke(app, ["search", "eval", "--out", str(out), "--quiet", *tiny])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    unwrapped = "".join(refused.output.split())  # rich folds long paths anywhere
    assert "student_bothwasmadefrom" in unwrapped and "relevance_teacher(manifest" in unwrapped
    assert "nowholdsanothermodel" in unwrapped


def assert_steps_logged_and_models_traced(run, models, trained: set[str]) -> None:
    """Every model logged each step of each fit (both folds and the saved "all"), and each
    student's manifest names the teachers saved beside it by their manifest hashes."""
    rows = read_step_metrics(run / "metrics.jsonl")
    for name in trained:
        for fold in (0, 1, "all"):
            steps = [r["step"] for r in rows if r.get("model") == name and r.get("fold") == fold]
            assert steps == list(range(1, len(steps) + 1)) and steps, (name, fold)
    assert all(r["loss"] >= 0 and r["lr"] >= 0 for r in rows if "model" in r)
    student = read_manifest(models / "student_both")
    assert student["run"]["folder"] == str(run.resolve()) and student["data_sha256"]
    teachers = {Path(p["path"]).name: p["manifest_sha256"] for p in student["parents"]}
    for name in ("relevance_teacher", "engagement_teacher"):
        assert teachers[name] == manifest_sha256(models / name)


def test_an_llm_judge_and_teacher_join_training_and_a_student_distils_it(tmp_path, llama_folder):
    """A tiny random Llama folder (answers y/n) as the relevance judge (scored against the
    qrels per fold first) and as train.llm_teacher: cross-validated, weighted by a student,
    saved, and reranked by `search eval`."""
    tiny = [
        *tiny_train_flags(tmp_path, teacher_epochs=0),
        *("--set", f"train.llm_teacher.model={llama_folder}", "--set", "train.llm_teacher.yes=y"),
        *("--set", "train.llm_teacher.no=n", "--set", "train.llm_teacher.epochs=1"),
        *("--set", "train.llm_teacher.max_passage_tokens=48"),
        *("--set", "train.llm_teacher.trainable_layers=1"),
        *("--set", "train.students.from_llm.llm=1.0", "--set", "train.cv.choices={}"),
        *("--set", "train.judge.kind=causal_lm", "--set", f"train.judge.model={llama_folder}"),
        *("--set", "train.judge.yes=y", "--set", "train.judge.no=n"),
    ]
    out = tmp_path / "runs"
    run, summary = train_run(out, tiny)
    assert {"llm_teacher", "student_from_llm"} <= set(summary["pooled"])
    assert 0 <= summary["pooled"]["llm_teacher"]["ndcg@10"] <= 1
    for fold in summary["chosen_per_fold"]:
        agreement = fold["relevance_judge"]["agreement_with_qrels"]
        assert agreement["queries"] > 0 and 0 <= agreement["ndcg@10"] <= 1
    assert "The relevance judge against the qrels" in (run / "report.md").read_text()
    saved = tmp_path / "models" / "llm_teacher"
    assert (saved / "winnow_llm_teacher.json").is_file()
    assert (saved / "trained_weights.safetensors").is_file()
    result = runner.invoke(app, ["search", "eval", "--out", str(out), "--quiet", *tiny])
    assert result.exit_code == 0, result.output
    (evaluation,) = [p for p in out.iterdir() if p.name.startswith("search-eval")]
    record = json.loads((evaluation / "metrics.json").read_text())
    assert "dense+llm_teacher" in record["summary"]["systems"]


def test_students_weighting_the_llm_need_the_llm_teacher():
    with pytest.raises(ValidationError, match=r"students\.mine weights the 'llm' teacher"):
        TrainConfig(students={"mine": {"llm": 1.0}})
    with pytest.raises(ValidationError, match=r"cv\.choices\.llm_teacher"):
        TrainConfig(cv={"choices": {"llm_teacher": [{"epochs": 0}]}})


def test_a_stopped_train_run_resumes_from_its_first_unfinished_fold(tmp_path):
    out = tmp_path / "runs"
    one_student = ["--set", "train.students={both: {relevance: 1.0, engagement: 0.5}}"]
    stopped, finished = train_run(out, [*tiny_train_flags(tmp_path), *one_student])
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == [
        "fold-0.json",
        "fold-1.json",
    ]
    # as if stopped while training fold 1, after the teachers of the final models were saved
    (stopped / "checkpoints" / "fold-1.json").unlink()
    shutil.rmtree(tmp_path / "models" / "student_both")

    args = ["search", "train", "--quiet", "--resume", str(stopped), "--out", str(tmp_path / "b")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # its own models need no --overwrite
    (run,) = (tmp_path / "b").iterdir()
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert summary["pooled"] == finished["pooled"]  # the same folds, the same held-out rankings
    assert summary["versus_dense"] == finished["versus_dense"]
    folds = {row.get("fold") for row in read_step_metrics(run / "metrics.jsonl")}
    assert folds == {1, "all"}  # fold 0 came from the checkpoint
    for name in summary["saved"]:
        assert read_manifest(tmp_path / "models" / name)["run"]["folder"] == str(run.resolve())

    # resuming the first run again: the models are now the second run's, so they are refused
    again = runner.invoke(app, [*args[:-1], str(tmp_path / "c")])
    assert again.exit_code == 2 and "--overwrite" in again.output
