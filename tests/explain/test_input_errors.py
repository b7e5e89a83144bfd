"""Bad input files (empty, not UTF-8, not CSV) to every explain command: one line, no run left."""

import gzip

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.explain.test_trips import TRIPS, write_csv
from winnow.cli import app
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.inputs import HEAD_BYTES, read_table
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
    with pytest.raises(ExplainInputError, match=r"census\.acs: .*table\.csv") as error:
        read_table(str(path), ["community_area"], "census.acs")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_bad_byte_past_the_checked_head_is_caught_by_the_reader(tmp_path):
    path = tmp_path / "late.csv"
    rows = "".join(f"{i},x\n" for i in range(HEAD_BYTES // 4))
    path.write_bytes(f"community_area,name\n{rows}".encode() + b"99,Caf\xe9\n")
    with pytest.raises(ExplainInputError, match=r"late.csv is not UTF-8 text \(byte 0xe9\)"):
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
    with pytest.raises(ExplainInputError, match=r"trip file: .*trips\.csv") as error:
        aggregate_trips(TripSource(paths=[str(path)]))
    assert message in str(error.value)


def test_a_broken_gzip_or_parquet_trip_file_is_named(tmp_path):
    packed = tmp_path / "trips.csv.gz"
    packed.write_bytes(gzip.compress(b"")[:5])
    with pytest.raises(ExplainInputError, match=r"trips\.csv\.gz is not a readable gzip file"):
        aggregate_trips(TripSource(paths=[str(packed)]))
    fake = tmp_path / "trips.parquet"
    fake.write_text("Trip ID,Fare\n")
    with pytest.raises(ExplainInputError, match=r"trips\.parquet is not a Parquet file"):
        aggregate_trips(TripSource(paths=[str(fake)]))


# Where each command reads the file given; {bad} is its path.
COMMANDS = {
    "slime": ["slime", "--set", "data.path={bad}"],
    "forest": ["forest", "--set", "data.path={bad}"],
    "demand counts": ["demand", "--set", "source.counts.path={bad}"],
    "demand census": ["demand", "--set", "census.acs={bad}"],
    "demand trips": [
        "demand",
        "--set",
        "source.counts=null",
        "--set",
        "source.trips={{paths: ['{bad}']}}",
    ],
}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_fails_in_one_line_and_leaves_no_run(tmp_path, command, kind):
    make, message = BAD_FILES[kind]
    bad = tmp_path / "input.csv"
    make(bad)
    out = tmp_path / "runs"
    args = ["explain", *(a.format(bad=bad) for a in COMMANDS[command]), "--out", str(out), "-q"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(bad) in lines[0] and message in lines[0]
    assert not out.exists()


def test_no_trip_in_the_window_is_one_line(tmp_path):
    trips = write_csv(tmp_path / "trips.csv")
    args = ["explain", "demand", "--set", "source.counts=null", "--out", str(tmp_path / "runs")]
    args += ["--set", f"source.trips={{paths: ['{trips}'], start: 2030-01-01}}"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exit_code == 2
    assert "no trip in" in result.output and "2030-01-01" in result.output
    assert not (tmp_path / "runs").exists()
