"""The search jobs end to end on a small slice: eval report, index folder, clear errors."""

import json

import faiss
import pytest
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.config import load_config
from winnow.search.datasets import load_beir
from winnow.search.jobs import SearchEvalConfig, evaluated_queries, select_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def data():
    return load_beir("search/msmarco_trecdl19_subset")


def test_slice_keeps_judged_passages_first_then_seeded_distractors(data):
    queries = evaluated_queries(data, load_config(SearchEvalConfig))
    judged = {doc for qid in queries for doc in data.qrels[qid]}
    corpus = select_corpus(data, queries[:1], max_passages=200, seed=0)
    first_judged = set(data.qrels[queries[0]])
    assert len(corpus.doc_ids) == 200 == len(set(corpus.doc_ids))
    assert first_judged <= set(corpus.doc_ids)
    assert corpus.doc_ids == select_corpus(data, queries[:1], 200, seed=0).doc_ids
    assert corpus.doc_ids != select_corpus(data, queries[:1], 200, seed=1).doc_ids
    assert len(judged) > 0


def test_evaluated_queries_are_the_split_and_never_train(data):
    config = load_config(SearchEvalConfig)
    test = evaluated_queries(data, config)
    train = evaluated_queries(data, load_config(SearchEvalConfig, overrides=["queries=train"]))
    assert test and train and not set(test) & set(train)
    everything = evaluated_queries(data, load_config(SearchEvalConfig, overrides=["queries=all"]))
    assert len(everything) == 43


def test_eval_and_index_commands_on_a_slice(tmp_path):
    common = [
        "--set",
        "data.max_passages=60",
        "--set",
        f"encoder.cache_dir={tmp_path / 'cache'}",
    ]
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
