"""Every command that reads a user's file or folder, given an empty, a binary or a missing one:
exit code 2, one line of error naming it, no traceback, and no output written."""

import pytest
from typer.testing import CliRunner

from winnow.cli import app


def empty(path):
    path.write_bytes(b"")


def binary(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))


def missing(path):
    """Leave ``path`` absent."""


BAD_FILES = {"empty": empty, "binary": binary, "missing": missing}

# Each command with {bad} where the user's file or folder goes; --out goes to {out}.
COMMANDS = {
    "route solve": ["route", "solve", "{bad}", "-o", "{out}/assignment.csv"],
    "explain slime": ["explain", "slime", "--set", "data.path={bad}", "--out", "{out}"],
    "explain forest": ["explain", "forest", "--set", "data.path={bad}", "--out", "{out}"],
    "explain demand": ["explain", "demand", "--set", "source.counts.path={bad}", "--out", "{out}"],
    "search index": ["search", "index", "--set", "data.name={bad}", "--set", "index_dir={out}"],
    "search eval": ["search", "eval", "--set", "data.name={bad}", "--out", "{out}"],
    "search serve --index-dir": ["search", "serve", "--index-dir", "{bad}"],
}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, command, kind):
    bad = tmp_path / "input.csv"
    BAD_FILES[kind](bad)
    out = tmp_path / "out"
    args = [a.format(bad=bad, out=out) for a in COMMANDS[command]]
    result = CliRunner().invoke(app, [*args, "-q"] if "--out" in args else args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(bad) in lines[0]
    assert not (out / "assignment.csv").exists()


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_file_in_a_beir_folder_is_named(tmp_path, kind):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n')
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t3\n")
    BAD_FILES[kind](folder / "corpus.jsonl")
    args = ["search", "index", "--set", f"data.name={folder}", "--set", f"index_dir={tmp_path}/i"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(folder / "corpus.jsonl") in lines[0], result.output
