"""Click logs: the loader's formats and errors, raw and IPS-debiased CTR, the click judge."""

import json
import math

import numpy as np
import pytest

from winnow.search.clicks import ClickJudge, examination_probability, ips_ctr, load_click_log
from winnow.search.datasets import Passage, Query
from winnow.search.exceptions import (
    DatasetFileNotFoundError,
    DatasetFormatError,
    SearchInputError,
)


def test_examination_closed_form():
    np.testing.assert_allclose(examination_probability(np.array([1, 2, 4]), 1.0), [1, 0.5, 0.25])
    np.testing.assert_allclose(examination_probability(np.array([4]), 0.5), [0.5])
    with pytest.raises(SearchInputError, match="ranks >= 1"):
        examination_probability(np.array([0, 1]))


def test_click_judge_labels_and_missing():
    judge = ClickJudge({"q1": {"d1": 0.25}})
    grades = judge.grade(Query("q1", "x"), [Passage("d1", "a"), Passage("d2", "b")])
    assert grades[0] == 0.25 and math.isnan(grades[1]) and judge.scale == "probability"
    with pytest.raises(SearchInputError, match="needs query ids"):
        judge.grade("text", [Passage("d1", "a")])


def write_rows(path, rows, kind):
    if kind == "csv":
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(str(row[c]) for c in header) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


ROWS = [
    {"query_id": "q1", "doc_id": "d1", "position": 1, "impressions": 10, "clicks": 4},
    {"query_id": "q1", "doc_id": "d1", "position": 1, "impressions": 10, "clicks": 2},
    {"query_id": "q1", "doc_id": "d2", "position": 2, "impressions": 20, "clicks": 2},
]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_load_click_log_formats(tmp_path, kind):
    path = tmp_path / f"log.{kind}"
    write_rows(path, ROWS, kind)
    log = load_click_log(path)
    assert not log.simulated and log.summary()["label"] == "logged clicks"
    assert log.pair_counts() == {("q1", "d1"): (20, 6), ("q1", "d2"): (20, 2)}
    assert log.ctr() == {"q1": {"d1": 0.3, "d2": 0.1}}
    assert ips_ctr(log)["q1"] == pytest.approx({"d1": 0.3, "d2": 0.2})
    assert ClickJudge(ips_ctr(log)).grade(Query("q1", ""), [Passage("d2", "")])[0] == 0.2


def test_load_click_log_by_query_text_without_positions(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("query,doc_id,impressions,clicks\ncats,d1,4,1\ndogs,d2,5,0\n")
    log = load_click_log(path, query_ids_by_text={"cats": "q1"})
    assert log.query_ids.tolist() == ["q1", "dogs"] and log.query_texts.tolist() == ["cats", "dogs"]
    assert not log.has_positions
    with pytest.raises(SearchInputError, match="needs the position"):
        ips_ctr(log)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("query_id,doc_id,clicks\nq1,d1,1\n", r"log\.csv:1: missing column\(s\) \['impressions'\]"),
        ("doc_id,impressions,clicks\nd1,2,1\n", r"'query_id \(or query\)'"),
        ("query_id,doc_id,impressions,clicks\nq1,d1,2,3\n", r"log\.csv:2: clicks \(3\) exceed"),
        ("query_id,doc_id,impressions,clicks\nq1,d1,2,x\n", r":2: column 'clicks' must be an int"),
        ("query_id,doc_id,impressions,clicks\nq1,d1,-2,0\n", r"'impressions' must be >= 0"),
        ("query_id,doc_id,impressions,clicks\nq1,,2,0\n", r"column 'doc_id' is empty"),
        ("query_id,doc_id,position,impressions,clicks\nq1,d1,0,2,0\n", r"rank >= 1; got 0"),
        ("query_id,doc_id,impressions,clicks\n", r"has no rows"),
    ],
)
def test_load_click_log_errors_name_file_line_and_column(tmp_path, text, match):
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(SearchInputError, match=match):
        load_click_log(path)


def test_load_click_log_file_errors(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="does not exist"):
        load_click_log(tmp_path / "absent.csv")
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(SearchInputError, match="file_format="):
        load_click_log(tmp_path / "log.xlsx")
    (tmp_path / "bad.jsonl").write_text('{"query_id": "q1"\n')
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl:1: not valid JSON"):
        load_click_log(tmp_path / "bad.jsonl")
