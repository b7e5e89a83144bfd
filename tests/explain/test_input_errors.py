"""Bad input files (empty, not UTF-8, not CSV) to the table and trip readers: one line naming it.

The walk of every command over bad files is tests/test_cli_bad_files.py."""

import gzip

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.explain.test_trips import TRIPS, write_csv
from winnow.cli import app
from winnow.common.exceptions import DataNotFoundError, InputFileError
from winnow.common.inputs import HEAD_BYTES, read_table
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.trips import TripSource, aggregate_trips


def empty(path):
    path.write_bytes(b"")


def blank_lines(path):
    path.write_bytes(b"\n  \n")


def latin1(path):
    path.write_bytes("community_area,name\n1,Rogers Park\n2,Caf\xe9\n".encode("latin-1"))


def xlsx(path):
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(200))


def parquet(path):
    pd.DataFrame({"community_area": [1, 2]}).to_parquet(path)


def header_only(path):
    path.write_text("community_area,name\n")


BAD_FILES = {
    "empty": (empty, "is empty"),
    "blank lines": (blank_lines, "is empty"),
    "latin-1": (latin1, "is not UTF-8 text (byte 0xe9)"),
    "xlsx named .csv": (xlsx, "Excel .xlsx workbook"),
    "parquet named .csv": (parquet, "is a Parquet file, not CSV text; name it .parquet"),
}


@pytest.mark.parametrize("kind", [*BAD_FILES, "header only"])
def test_read_table_names_the_file_and_the_fix(tmp_path, kind):
    make, message = BAD_FILES.get(kind, (header_only, "has a header but no rows"))
    path = tmp_path / "table.csv"
    make(path)
    with pytest.raises(InputFileError, match=r"census\.acs: .*table\.csv") as error:
        read_table(str(path), ["community_area"], "census.acs")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_bad_byte_past_the_checked_head_is_caught_by_the_reader(tmp_path):
    path = tmp_path / "late.csv"
    rows = "".join(f"{i},x\n" for i in range(HEAD_BYTES // 4))
    path.write_bytes(f"community_area,name\n{rows}".encode() + b"99,Caf\xe9\n")
    with pytest.raises(InputFileError, match=r"late.csv is not UTF-8 text \(byte 0xe9\)"):
        read_table(str(path), ["community_area"], "data.path")
    trips = write_csv(tmp_path / "trips.csv", TRIPS * (HEAD_BYTES // (15 * 100)))
    trips.write_bytes(trips.read_bytes() + ",".join(["Caf\xe9"] * 24).encode("latin-1"))
    with pytest.raises(ExplainInputError, match=r"trip file .*trips.csv could not be read"):
        aggregate_trips(TripSource(paths=[str(trips)]))


@pytest.mark.parametrize("kind", BAD_FILES)
def test_trip_files_name_the_file_and_the_fix(tmp_path, kind):
    make, message = BAD_FILES[kind]
    path = tmp_path / "trips.csv"
    make(path)
    with pytest.raises(InputFileError, match=r"trip file: .*trips\.csv") as error:
        aggregate_trips(TripSource(paths=[str(path)]))
    assert message in str(error.value)


def test_a_broken_gzip_or_parquet_trip_file_is_named(tmp_path):
    packed = tmp_path / "trips.csv.gz"
    packed.write_bytes(gzip.compress(b"")[:5])
    with pytest.raises(InputFileError, match=r"trips\.csv\.gz is not a readable gzip file"):
        aggregate_trips(TripSource(paths=[str(packed)]))
    fake = tmp_path / "trips.parquet"
    fake.write_text("Trip ID,Fare\n")
    with pytest.raises(InputFileError, match=r"trips\.parquet is not a Parquet file"):
        aggregate_trips(TripSource(paths=[str(fake)]))


def test_no_trip_in_the_window_is_one_line(tmp_path):
    trips = write_csv(tmp_path / "trips.csv")
    args = ["explain", "demand", "--set", "source.counts=null", "--out", str(tmp_path / "runs")]
    args += ["--set", f"source.trips={{paths: ['{trips}'], start: 2030-01-01}}"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exit_code == 2
    assert "no trip in" in result.output and "2030-01-01" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spec", ["/nonexistent.csv", "absent.csv"])
def test_a_missing_path_says_it_does_not_exist(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match=rf"batch: {spec} does not exist"):
        read_table(spec, [], "batch")
    with pytest.raises(InputFileError, match="is a folder"):
        read_table(tmp_path, [], "batch")
