"""Input files of the explain jobs: CSV or Parquet, or one error that names the file and the fix.

An empty file, a file that is not UTF-8, or one that is not a table at all (an Excel workbook
or a Parquet file named ``.csv``) would otherwise surface as a parser's traceback, or worse, be
read as a one-column table. :func:`check_text_table` looks at the start of a file before any
engine reads it; :func:`read_table` reads a whole table with pandas and turns its parser
errors into :class:`~winnow.explain.exceptions.ExplainInputError`.
"""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path
from typing import TYPE_CHECKING

from winnow.common.data import data_file
from winnow.explain.exceptions import ExplainInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_parquet", "check_text_table", "read_table"]

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


def check_text_table(path: Path, what: str) -> None:
    """Raise unless ``path`` (CSV, or gzipped CSV if named ``.gz``) starts as UTF-8 CSV text.

    Checks the first 64 KiB: not empty (nor only blank lines), no binary signature or NUL
    byte, valid UTF-8. A file that breaks later is caught by the reader that meets it.
    """
    head = _head(path, what)
    if not head.strip():
        raise ExplainInputError(f"{what}: {path} is empty; {CSV_FIX}")
    for signature, (kind, fix) in SIGNATURES.items():
        if head.startswith(signature):
            raise ExplainInputError(f"{what}: {path} is {kind}, not CSV text; {fix}")
    if b"\x00" in head:
        raise ExplainInputError(f"{what}: {path} holds binary data, not CSV text; {CSV_FIX}")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < HEAD_BYTES)
    except UnicodeDecodeError as exc:
        raise ExplainInputError(_not_utf8(what, path, exc)) from None


def check_parquet(path: Path, what: str) -> None:
    """Raise unless ``path`` starts with the Parquet magic bytes."""
    head = _head(path, what)[:4]
    if head != b"PAR1":
        found = "is empty" if not head else "is not a Parquet file (no PAR1 header)"
        raise ExplainInputError(f"{what}: {path} {found}; give a Parquet file or a .csv file")


def read_table(path: str | Path, columns: list[str], what: str, fix: str = "") -> pd.DataFrame:
    """Read a CSV or Parquet table (a path or ``'<data set>/<file>'``) that has ``columns``.

    ``what`` names the setting the path came from (``"census.acs"``); ``fix`` replaces the
    default advice when a column is missing. Raises :class:`ExplainInputError` for any other
    suffix, an empty, binary or non-UTF-8 file, a malformed CSV, a table without rows, or a
    missing column.
    """
    resolved = data_file(path)
    suffix = resolved.suffix.lower()
    if suffix not in _READERS:
        raise ExplainInputError(
            f"{what}: {resolved} is a {suffix or 'suffix-less'} file; give a .csv or .parquet file"
        )
    frame = _READERS[suffix](resolved, what)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ExplainInputError(
            f"{what}: columns {absent} are not in {resolved} "
            f"(it has: {', '.join(map(str, frame.columns))}); {fix or 'fix the file or the path'}"
        )
    if frame.empty:
        raise ExplainInputError(f"{what}: {resolved} has a header but no rows; {CSV_FIX}")
    return frame


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    import pandas as pd

    check_text_table(path, what)
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExplainInputError(_not_utf8(what, path, exc)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ExplainInputError(
            f"{what}: {path} is not a readable CSV ({reason}); {CSV_FIX}"
        ) from None


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    import pandas as pd
    import pyarrow

    check_parquet(path, what)
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ExplainInputError(
            f"{what}: {path} is not a readable Parquet file ({reason})"
        ) from None


_READERS = {".csv": _read_csv, ".parquet": _read_parquet}


def _head(path: Path, what: str) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except (gzip.BadGzipFile, EOFError) as exc:
        raise ExplainInputError(f"{what}: {path} is not a readable gzip file ({exc})") from None


def _not_utf8(what: str, path: Path, exc: UnicodeDecodeError) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return (
        f"{what}: {path} is not UTF-8 text (byte 0x{byte}); re-save it as UTF-8, e.g. "
        f"iconv -f latin1 -t utf-8 {path.name} > utf8.csv"
    )
