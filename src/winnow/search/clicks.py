"""Interaction logs: impressions and clicks per (query, document, position), and IPS debiasing.

A :class:`ClickLog` holds one row per (query, document, position) shown::

    query_ids, doc_ids: [n] str     positions: [n] int (1 = top; 0 = not recorded)
    impressions, clicks: [n] int    simulated: bool (True only for simulated logs)

- :func:`load_click_log` reads a real log (CSV, TSV, JSONL or Parquet) with columns
  ``query_id`` (or ``query``, the query text), ``doc_id``, ``impressions``, ``clicks`` and
  optionally ``position``; rows repeating a (query, doc, position) are summed.
- :func:`ips_ctr` removes position bias under the position-based model
  ``P(click | d at rank r) = examination(r) * attractiveness(q, d)`` with
  ``examination(r) = r^-eta``: ``sum clicks / sum_i examination(position_i)`` over the
  impressions of a pair is an unbiased estimate of its attractiveness.
- :class:`ClickJudge` serves any per-pair click signal through the
  :class:`~winnow.search.teachers.RelevanceJudge` interface (``NaN`` for pairs never shown), so
  a teacher trains on clicks the way it trains on judgments.

No real logs ship with winnow; :mod:`winnow.search.click_simulator` draws SIMULATED ones.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from winnow.common.exceptions import MissingExtraError
from winnow.search.datasets import Passage, Query, jsonl_records
from winnow.search.exceptions import (
    DatasetFileNotFoundError,
    DatasetFormatError,
    SearchInputError,
)

__all__ = [
    "ClickJudge",
    "ClickLog",
    "PairValues",
    "examination_probability",
    "ips_ctr",
    "load_click_log",
]

PairValues = dict[str, dict[str, float]]
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
_COUNT_COLUMNS = ("impressions", "clicks")


@dataclass(frozen=True, eq=False)
class ClickLog:
    """Impressions and clicks per (query, document, position); see the module doc for shapes.

    ``query_texts`` is ``[n]`` str, ``""`` where the log gave only ids. ``positions`` are ranks
    from 1; 0 means the log did not record one (such rows cannot be debiased by position).
    """

    query_ids: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    query_texts: np.ndarray
    simulated: bool = False
    source: str = ""

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def has_positions(self) -> bool:
        """Whether every row records the rank it was shown at."""
        return bool(len(self) and (self.positions > 0).all())

    def ctr(self) -> PairValues:
        """Raw click-through rate ``{qid: {docid: clicks / impressions}}``, positions pooled."""
        out: PairValues = {}
        for (qid, doc), (shown, clicked) in self._pair_sums(self.impressions).items():
            if shown > 0:
                out.setdefault(qid, {})[doc] = clicked / shown
        return out

    def pair_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """``{(qid, docid): (impressions, clicks)}`` summed over positions."""
        sums = self._pair_sums(self.impressions)
        return {pair: (int(shown), int(clicked)) for pair, (shown, clicked) in sums.items()}

    def to_records(self) -> list[dict]:
        """One dict per row, with a ``simulated`` field: ready for a CSV, JSONL or DataFrame."""
        return [
            {
                "query_id": qid,
                "doc_id": doc,
                "position": int(pos),
                "impressions": int(shown),
                "clicks": int(clicked),
                "simulated": self.simulated,
            }
            for qid, doc, pos, shown, clicked in zip(
                self.query_ids.tolist(),
                self.doc_ids.tolist(),
                self.positions,
                self.impressions,
                self.clicks,
                strict=True,
            )
        ]

    def summary(self) -> dict:
        """Counts for a report; a simulated log is labelled as such."""
        shown, clicked = int(self.impressions.sum()), int(self.clicks.sum())
        return {
            "source": self.source,
            "simulated": self.simulated,
            "label": "SIMULATED clicks" if self.simulated else "logged clicks",
            "rows": len(self),
            "queries": len(set(self.query_ids.tolist())),
            "pairs": len(set(zip(self.query_ids.tolist(), self.doc_ids.tolist(), strict=True))),
            "impressions": shown,
            "clicks": clicked,
            "ctr": clicked / shown if shown else math.nan,
        }

    def _pair_sums(self, weights: np.ndarray) -> dict[tuple[str, str], tuple[float, int]]:
        sums: dict[tuple[str, str], list] = {}
        for qid, doc, weight, clicked in zip(
            self.query_ids.tolist(), self.doc_ids.tolist(), weights, self.clicks, strict=True
        ):
            entry = sums.setdefault((qid, doc), [0.0, 0])
            entry[0] += float(weight)
            entry[1] += int(clicked)
        return {pair: (entry[0], entry[1]) for pair, entry in sums.items()}


def examination_probability(positions: np.ndarray, eta: float = 1.0) -> np.ndarray:
    """``r ** -eta`` for ranks ``r >= 1``: the chance a user looks at rank ``r``.

    Shape: ``[...] int -> [...] float64``; ``eta = 0`` means no position bias.
    """
    positions = np.asarray(positions)
    if positions.size and positions.min() < 1:
        raise SearchInputError(
            "positions must be ranks >= 1 to compute examination; this log has rows without a "
            "recorded position (0); fix: log the rank each result was shown at"
        )
    return positions.astype(np.float64) ** -float(eta)


def ips_ctr(log: ClickLog, eta: float = 1.0, min_impressions: int = 1) -> PairValues:
    """Position-debiased CTR ``{qid: {docid: sum clicks / sum_i examination(r_i)}}``.

    The denominator is the expected number of times the pair was examined, so under the
    position-based model the estimate is unbiased for ``attractiveness(q, d)`` whatever the
    positions it was shown at (it can exceed 1 by chance on few impressions). Pairs with fewer
    than ``min_impressions`` impressions are left out (no label).
    """
    if not isinstance(min_impressions, Integral) or min_impressions < 1:
        raise SearchInputError(f"min_impressions must be an int >= 1; got {min_impressions!r}")
    if not log.has_positions:
        raise SearchInputError(
            f"ips_ctr needs the position of every row; {log.source or 'this log'} has rows "
            "without one; fix: use ClickLog.ctr() for raw CTR, or log positions"
        )
    examined = log.impressions * examination_probability(log.positions, eta)
    counts = log.pair_counts()
    out: PairValues = {}
    for (qid, doc), (expected, clicked) in log._pair_sums(examined).items():
        if counts[qid, doc][0] >= min_impressions and expected > 0:
            out.setdefault(qid, {})[doc] = clicked / expected
    return out


class ClickJudge:
    """Per-pair click labels behind the judge interface: ``grade(query, docs) -> [n] float``.

    Args:
        labels: ``{qid: {docid: value}}``, e.g. :func:`ips_ctr` or :meth:`ClickLog.ctr`.

    ``scale = "probability"``; a pair without a value is ``NaN`` (no label, masked in training).
    Queries and documents must carry ids (:class:`~winnow.search.datasets.Query`, ``Passage``).
    """

    scale = "probability"

    def __init__(self, labels: Mapping[str, Mapping[str, float]]):
        self.labels = labels

    def grade(self, query: Query | str, docs: Sequence[Passage | str]) -> np.ndarray:
        """``[len(docs)]`` float click labels, ``NaN`` where the pair has none."""
        judged = self.labels.get(_require_id(query, "query"), {})
        return np.array(
            [float(judged.get(_require_id(doc, "doc"), math.nan)) for doc in docs], dtype=np.float64
        )


def load_click_log(
    path: str | Path,
    query_ids_by_text: Mapping[str, str] | None = None,
    file_format: str | None = None,
) -> ClickLog:
    """Read a real interaction log; errors name the file, the row and the column.

    Args:
        path: a ``.csv``, ``.tsv``, ``.jsonl`` (``.json``: one object per line) or ``.parquet``
            file (Parquet needs pyarrow).
        query_ids_by_text: when the log has a ``query`` text column and no ``query_id``, maps
            texts to ids (e.g. ``dict(zip(data.query_texts, data.query_ids))``); without it the
            text is the id.
        file_format: ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"``; default from the suffix.

    Columns: ``query_id`` or ``query``; ``doc_id``; ``impressions`` and ``clicks`` (integers,
    ``0 <= clicks <= impressions``); optional ``position`` (rank from 1). Extra columns are
    ignored. Rows repeating a (query, doc, position) are summed.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileNotFoundError(f"click log {path} does not exist")
    kind = file_format or _FORMATS.get(path.suffix.lower())
    if kind not in _READERS:
        raise SearchInputError(
            f"cannot tell the format of {path} (suffix {path.suffix!r}); fix: pass "
            f"file_format= one of {sorted(_READERS)}"
        )
    columns, rows = _READERS[kind](path)
    query_column = _check_columns(path, columns)
    totals: dict[tuple[str, str, str, int], list[int]] = {}
    for line, row in rows:
        key = _parse_key(path, line, row, query_column, query_ids_by_text)
        counts = [_count(path, line, row, name) for name in _COUNT_COLUMNS]
        if counts[1] > counts[0]:
            raise DatasetFormatError(
                path, line, f"clicks ({counts[1]}) exceed impressions ({counts[0]})"
            )
        entry = totals.setdefault(key, [0, 0])
        entry[0] += counts[0]
        entry[1] += counts[1]
    if not totals:
        raise SearchInputError(f"click log {path} has no rows")
    keys = list(totals)
    return ClickLog(
        query_ids=np.array([k[0] for k in keys], dtype=str),
        doc_ids=np.array([k[2] for k in keys], dtype=str),
        positions=np.array([k[3] for k in keys], dtype=np.int64),
        impressions=np.array([totals[k][0] for k in keys], dtype=np.int64),
        clicks=np.array([totals[k][1] for k in keys], dtype=np.int64),
        query_texts=np.array([k[1] for k in keys], dtype=str),
        simulated=False,
        source=str(path),
    )


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        rows = [(line, row) for line, row in enumerate(reader, start=2)]
    return columns, rows


def _read_jsonl(path: Path) -> tuple[list[str], list]:
    rows = list(jsonl_records(path))
    columns: dict[str, None] = {}
    for _, record in rows:
        columns.update(dict.fromkeys(record))
    return list(columns), rows


def _read_parquet(path: Path) -> tuple[list[str], list]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError(
            f"reading {path} needs pyarrow; pip install pyarrow (or 'winnow[route]')"
        ) from exc
    table = pq.read_table(path)
    return table.column_names, list(enumerate(table.to_pylist(), start=1))


_READERS: dict[str, Callable[[Path], tuple[list[str], list]]] = {
    "csv": lambda path: _read_delimited(path, ","),
    "tsv": lambda path: _read_delimited(path, "\t"),
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
}


def _check_columns(path: Path, columns: list[str]) -> str:
    query_column = "query_id" if "query_id" in columns else "query" if "query" in columns else None
    missing = [name for name in ("doc_id", *_COUNT_COLUMNS) if name not in columns]
    if query_column is None:
        missing.insert(0, "query_id (or query)")
    if missing:
        raise DatasetFormatError(
            path,
            1,
            f"missing column(s) {missing}; found {columns}; a click log needs query_id (or "
            "query), doc_id, impressions, clicks and optionally position",
        )
    return query_column


def _parse_key(path, line, row, query_column, query_ids_by_text) -> tuple[str, str, str, int]:
    query = _text_cell(path, line, row, query_column)
    doc = _text_cell(path, line, row, "doc_id")
    text = ""
    if query_column == "query":
        text, query = query, (query_ids_by_text or {}).get(query, query)
    position = row.get("position")
    rank = 0 if position in (None, "") else _integer(path, line, "position", position)
    if position not in (None, "") and rank < 1:
        raise DatasetFormatError(path, line, f"column 'position' must be a rank >= 1; got {rank}")
    return query, text, doc, rank


def _text_cell(path, line, row, column) -> str:
    value = row.get(column)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DatasetFormatError(path, line, f"column {column!r} is empty or not text: {value!r}")
    return value.strip()


def _count(path, line, row, column) -> int:
    value = _integer(path, line, column, row.get(column))
    if value < 0:
        raise DatasetFormatError(path, line, f"column {column!r} must be >= 0; got {value}")
    return value


def _integer(path, line, column, value) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Integral):
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetFormatError(
            path, line, f"column {column!r} must be an integer; got {value!r}"
        ) from None


def _require_id(item: Query | Passage | str, what: str) -> str:
    if isinstance(item, str) or not item.id:
        raise SearchInputError(
            f"ClickJudge needs {what} ids; pass Query/Passage objects with ids, not bare text"
        )
    return item.id
