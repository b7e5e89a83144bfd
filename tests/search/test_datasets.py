"""BEIR loading (headerless and headed qrels, malformed lines) and leak-free query splits."""

import pytest

from winnow.search.datasets import (
    BeirDataset,
    Passage,
    Query,
    load_beir,
    read_qrels,
    split_queries,
)
from winnow.search.exceptions import DatasetFileNotFoundError, DatasetFormatError

SHIPPED = "search/msmarco_trecdl19_subset"


def test_shipped_headerless_qrels_keep_their_first_line():
    data = load_beir(SHIPPED)
    # The file's first line is a judgment, not a header; a header-skipping reader loses it.
    assert data.qrels["19335"]["1720389"] == 1
    summary = data.summary()
    assert (summary["documents"], summary["queries"], summary["judged_queries"]) == (5000, 50, 43)
    assert (summary["grade_1"], summary["grade_2"], summary["grade_3"]) == (1601, 1804, 697)
    assert summary["judgments"] == 4102
    assert summary["unknown_docs"] == summary["unknown_queries"] == 0
    assert len(data.unjudged_query_ids) == 7
    assert set(data.unjudged_query_ids).isdisjoint(data.qrels)


def test_header_detected_and_unjudged_queries_kept(beir_folder):
    data = load_beir(beir_folder)
    assert data.qrels == {"q1": {"d1": 3, "d4": 1}, "q2": {"d3": 2}}
    assert data.query_ids == ["q1", "q2", "q3"]
    assert data.unjudged_query_ids == ["q3"]
    assert data.judged_query_ids == ["q1", "q2"]
    assert data.passages[0] == "Cats the cat sat on the mat"
    assert data.passages[1] == "dogs chase cats in the park"
    assert data.queries()[0] == Query("q1", "where did the cat sit")
    assert data.passages_of(["d3"]) == [Passage("d3", "stock markets fell sharply today")]


def test_qrels_without_header_and_trec_columns(tmp_path):
    plain = tmp_path / "plain.tsv"
    plain.write_text("q1\td1\t3\n\nq1\td2\t0\n")
    trec = tmp_path / "trec.txt"
    trec.write_text("q1 Q0 d1 3\nq1 Q0 d2 0\n")
    assert read_qrels(plain) == read_qrels(trec) == {"q1": {"d1": 3, "d2": 0}}


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("q1\td1\t3\nq1\td2\n", 2, "expected 3 columns"),
        ("q1\td1\t3\nq1\td2\thigh\n", 2, "not an integer"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t3\nq1\td1\t2\n", 3, "judged twice"),
    ],
)
def test_malformed_qrels_name_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "qrels.tsv"
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match=needle) as info:
        read_qrels(path)
    assert isinstance(info.value, ValueError)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}:")


def test_malformed_corpus_lines(beir_folder):
    corpus = beir_folder / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + "\n{not json}\n")
    with pytest.raises(DatasetFormatError, match=r"corpus.jsonl:6: not valid JSON"):
        load_beir(beir_folder)
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(DatasetFormatError, match=r"corpus.jsonl:2: duplicate _id 'a'"):
        load_beir(beir_folder)
    corpus.write_text('{"_id": "a"}\n')
    with pytest.raises(DatasetFormatError, match=r"corpus.jsonl:1: field 'text'"):
        load_beir(beir_folder)


def test_missing_files_and_folders(beir_folder, tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match=r"qrels/dev.tsv is missing") as info:
        load_beir(beir_folder, split="dev")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        load_beir("search/no_such_collection")


def test_split_is_disjoint_complete_and_deterministic():
    ids = [f"q{i}" for i in range(43)]
    split = split_queries(ids, (0.6, 0.2, 0.2), seed=3)
    parts = [set(split.train), set(split.dev), set(split.test)]
    assert [len(p) for p in parts] == [26, 9, 8]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2])
    assert parts[1].isdisjoint(parts[2])
    assert parts[0] | parts[1] | parts[2] == set(ids)
    assert split_queries(list(reversed(ids)) + ids[:5], (0.6, 0.2, 0.2), seed=3) == split
    assert split_queries(ids, (0.6, 0.2, 0.2), seed=4) != split


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        split_queries(["a", "b"], (0.5, 0.2, 0.2))


def test_with_queries_restricts_queries_and_qrels(beir_folder):
    data = load_beir(beir_folder).with_queries(["q2", "q3"])
    assert isinstance(data, BeirDataset)
    assert data.query_texts == ["stock market news", "unjudged question"]
    assert data.qrels == {"q2": {"d3": 2}}
    assert len(data.doc_ids) == 4
