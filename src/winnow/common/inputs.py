"""Users' tables (CSV or Parquet), read by every capability, or one line naming the file and fix.

A missing or empty file, one that is not UTF-8, or one that is not a table at all (an Excel
workbook or a Parquet file named ``.csv``) would otherwise surface as a parser's traceback, or
worse, be read as a one-column table. :func:`check_text_table` looks at the start of a file
before any engine reads it; :func:`read_table` reads a whole table with pandas and turns its
parser errors into :class:`~winnow.common.exceptions.InputFileError`.
"""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path
from typing import TYPE_CHECKING

from winnow.common.data import data_file
from winnow.common.exceptions import DataNotFoundError, InputFileError
from winnow.common.extras import require

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_parquet", "check_text_table", "read_json_object", "read_table", "resolve_input"]

HEAD_BYTES = 1 << 16
CSV_FIX = "give a UTF-8 CSV file with a header row, or a Parquet file"
# Leading bytes of formats saved by mistake under a .csv name: what the file is, and the fix.
SIGNATURES = {
    b"PAR1": ("a Parquet file", "name it .parquet"),
    b"PK\x03\x04": ("a zip archive or an Excel .xlsx workbook", "export it as UTF-8 CSV"),
    b"\xd0\xcf\x11\xe0": ("an Excel .xls workbook", "export it as UTF-8 CSV"),
    b"\x1f\x8b": ("gzip-compressed", "unpack it, or name it .csv.gz where that is accepted"),
    b"%PDF": ("a PDF document", CSV_FIX),
    b"\x89PNG": ("a PNG image", CSV_FIX),
}


def check_text_table(path: Path, what: str, text: str = "CSV", fix: str = CSV_FIX) -> None:
    """Raise unless ``path`` (gzipped if named ``.gz``) starts as UTF-8 ``text`` (CSV, JSONL).

    Checks the first 64 KiB: not empty (nor only blank lines), no binary signature or NUL
    byte, valid UTF-8. A file that breaks later is caught by the reader that meets it.
    ``fix`` is the advice for an empty or binary file.
    """
    path = Path(path)
    head = _head(path, what)
    if not head.strip():
        raise InputFileError(f"{what}: {path} is empty; {fix}")
    for signature, (kind, advice) in SIGNATURES.items():
        if head.startswith(signature):
            advice = advice if text == "CSV" else fix
            raise InputFileError(f"{what}: {path} is {kind}, not {text} text; {advice}")
    if b"\x00" in head:
        raise InputFileError(f"{what}: {path} holds binary data, not {text} text; {fix}")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < HEAD_BYTES)
    except UnicodeDecodeError as exc:
        raise InputFileError(_not_utf8(what, path, exc)) from None


def check_parquet(path: Path, what: str) -> None:
    """Raise unless ``path`` starts with the Parquet magic bytes."""
    head = _head(path, what)[:4]
    if head != b"PAR1":
        found = "is empty" if not head else "is not a Parquet file (no PAR1 header)"
        raise InputFileError(f"{what}: {path} {found}; give a Parquet file or a .csv file")


def read_table(path: str | Path, columns: list[str], what: str, fix: str = "") -> pd.DataFrame:
    """Read a CSV or Parquet table (a path or ``'<data set>/<file>'``) that has ``columns``.

    ``what`` names the setting the path came from (``"census.acs"``); ``fix`` replaces the
    default advice when a column is missing. Raises :class:`InputFileError` for any other
    suffix, an empty, binary or non-UTF-8 file, a malformed CSV, a table without rows, or a
    missing column.
    """
    resolved = resolve_input(path, what)
    suffix = resolved.suffix.lower()
    if suffix not in _READERS:
        raise InputFileError(
            f"{what}: {resolved} is a {suffix or 'suffix-less'} file; give a .csv or .parquet file"
        )
    frame = _READERS[suffix](resolved, what)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise InputFileError(
            f"{what}: columns {absent} are not in {resolved} "
            f"(it has: {', '.join(map(str, frame.columns))}); {fix or 'fix the file or the path'}"
        )
    if frame.empty:
        raise InputFileError(f"{what}: {resolved} has a header but no rows; {CSV_FIX}")
    return frame


def resolve_input(spec: str | Path, what: str) -> Path:
    """The file ``spec`` names: a path that exists, or ``'<data set>/<file>'`` (see
    :func:`~winnow.common.data.data_file`).

    A spec that can only be a path (absolute, a bare name, or under a folder that exists here)
    and names nothing raises :class:`~winnow.common.exceptions.DataNotFoundError` saying so,
    rather than looking for a data set called ``''`` or ``'.'``.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        raise InputFileError(f"{what}: {path} is a folder; give a .csv or .parquet file")
    if not path.is_file() and (path.is_absolute() or path.parent.is_dir()):
        raise DataNotFoundError(f"{what}: {path} does not exist; give a .csv or .parquet file")
    return data_file(path)


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    pd = require("pandas", "explain")

    check_text_table(path, what)
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(_not_utf8(what, path, exc)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise InputFileError(
            f"{what}: {path} could not be read as CSV ({reason}); {CSV_FIX}"
        ) from None


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    pd = require("pandas", "explain")
    pyarrow = require("pyarrow", "explain")

    check_parquet(path, what)
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise InputFileError(f"{what}: {path} is not a readable Parquet file ({reason})") from None


_READERS = {".csv": _read_csv, ".parquet": _read_parquet, ".pq": _read_parquet}


def _head(path: Path, what: str) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputFileError(f"{what}: {path} is not a readable gzip file ({exc})") from None


def _not_utf8(what: str, path: Path, exc: UnicodeDecodeError) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return (
        f"{what}: {path} is not UTF-8 text (byte 0x{byte}); re-save it as UTF-8, e.g. "
        f"iconv -f latin1 -t utf-8 {path.name} > utf8{path.suffix}"
    )


def read_json_object(path: Path, error: type[Exception], fix: str) -> dict:
    """The JSON object in ``path``; raise ``error`` naming the file, what is wrong and ``fix``
    when it is not UTF-8 JSON or holds something other than an object."""
    import json

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem}); {fix}") from None
    if not isinstance(record, dict):
        raise error(f"{path} holds a JSON {type(record).__name__}, not an object; {fix}")
    return record
