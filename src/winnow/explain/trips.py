"""Raw Chicago TNP trip files -> trip counts per census tract or community area, with DuckDB.

The City of Chicago portal publishes ridesourcing trips (*Transportation Network Providers -
Trips*) as CSV or Parquet, about 19 GB for 2018-2019, so nothing here loads a file into memory:
one DuckDB ``GROUP BY`` streams the files into per-cell counts and sums, and only the result
(one row per tract, area or OD pair) reaches pandas.

Publisher rules the aggregation respects: the census tract is *suppressed* (blank) when fewer
than 3 trips share an OD pair in a 15-minute window, while the community area is still given;
trips starting or ending outside Chicago have a blank community area. Column names are accepted
as the CSV header writes them ("Trip Start Timestamp") or in the API's snake_case
(``trip_start_timestamp``).
"""

from __future__ import annotations

import glob
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from winnow.common.config import Config
from winnow.common.inputs import check_parquet, check_text_table
from winnow.explain.exceptions import ExplainInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PORTAL_COLUMNS", "TripCounts", "TripSource", "aggregate_trips"]

# The header of the portal's CSV export, in order (the 2018-2022 set lacks the "Percent"
# columns; the API and Parquet exports use the same names in snake_case).
PORTAL_COLUMNS = [
    "Trip ID",
    "Trip Start Timestamp",
    "Trip End Timestamp",
    "Trip Seconds",
    "Trip Miles",
    "Percent Time Chicago",
    "Percent Distance Chicago",
    "Pickup Census Tract",
    "Dropoff Census Tract",
    "Pickup Community Area",
    "Dropoff Community Area",
    "Fare",
    "Tip",
    "Additional Charges",
    "Trip Total",
    "Shared Trip Authorized",
    "Shared Trip Match",
    "Trips Pooled",
    "Pickup Centroid Latitude",
    "Pickup Centroid Longitude",
    "Pickup Centroid Location",
    "Dropoff Centroid Latitude",
    "Dropoff Centroid Longitude",
    "Dropoff Centroid Location",
]
_READERS = {
    ".csv": "read_csv($files, header = true, all_varchar = true)",
    ".csv.gz": "read_csv($files, header = true, all_varchar = true)",
    ".parquet": "read_parquet($files)",
}
# The trip ends each unit counts: (SQL code, portal column prefix, output key column).
_ENDS = {
    "pickups": (("o", "pickup", "origin"),),
    "od": (("o", "pickup", "origin"), ("d", "dropoff", "destination")),
}
_ATTRIBUTES = {  # output column -> (portal column, value it averages)
    "mean_trip_miles": ("trip_miles", "number"),
    "mean_trip_seconds": ("trip_seconds", "number"),
    "mean_fare": ("fare", "number"),
    "share_shared_authorized": ("shared_trip_authorized", "flag"),
}
_PORTAL_TIME = "%m/%d/%Y %I:%M:%S %p"
_TIME_STEP = timedelta(minutes=15)  # the portal rounds times to 15 minutes


class TripSource(Config):
    """Raw TNP trip files and how to aggregate them."""

    paths: list[str] = Field(
        min_length=1, description="files or globs ending in .csv, .csv.gz or .parquet"
    )
    level: Literal["tract", "community_area"] = "community_area"
    unit: Literal["pickups", "od"] = Field(
        "pickups", description="count by origin, or by origin-destination pair"
    )
    start: datetime | None = Field(None, description="inclusive bound on Trip Start Timestamp")
    end: datetime | None = Field(None, description="exclusive bound on Trip Start Timestamp")
    suppressed: Literal["drop", "allocate"] = Field(
        "allocate", description="tract level: drop trips with a blank tract, or spread them"
    )
    memory_limit: str = Field("2GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]?i?B$")
    threads: int = Field(2, ge=1)

    @field_validator("paths", mode="before")
    @classmethod
    def _paths_as_strings(cls, value):
        values = [value] if isinstance(value, str | Path) else value
        if isinstance(values, list | tuple):
            return [str(item) if isinstance(item, Path) else item for item in values]
        return values

    @field_validator("start", "end")
    @classmethod
    def _local_time(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("portal times are naive Chicago local times; drop the time zone")
        return value

    @model_validator(mode="after")
    def _start_before_end(self):
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


@dataclass(frozen=True)
class TripCounts:
    """Trips per origin (``unit="pickups"``) or origin-destination pair (``unit="od"``).

    ``table`` has ``origin`` (int64: tract GEOID or community area 1-77), ``destination`` for
    ``od``, ``trips`` (float: observed plus allocated suppressed trips), ``observed_trips`` (int:
    trips whose unit is known at every end counted), and ``mean_trip_miles``,
    ``mean_trip_seconds``, ``mean_fare``, ``share_shared_authorized``, averaged over the observed
    trips only: NaN where a key has only allocated trips. Sorted by the keys.

    The counts always satisfy ``table.trips.sum() == rows_in_window - rows_outside_chicago -
    rows_suppressed`` with ``suppressed="drop"``, and ``... - rows_unallocatable`` with
    ``"allocate"`` (up to float rounding).
    """

    table: pd.DataFrame
    level: str
    unit: str
    rows_read: int  # rows in the files
    rows_in_window: int  # start time parsed and in [start, end)
    rows_outside_chicago: int  # in window, community area blank at an end counted: excluded
    rows_suppressed: int  # in window, in Chicago, tract blank at an end counted (tract level)
    rows_allocated: float  # suppressed trips spread over tracts (0 with "drop")
    rows_unallocatable: int  # suppressed in an area with no observed tract at that end: dropped
    days: float  # length of the window: start/end if given, else first to last time + 15 min


def aggregate_trips(source: TripSource) -> TripCounts:
    """Count trips per tract or community area (or OD pair) in the window, streaming the files.

    At tract level with ``suppressed="allocate"`` each suppressed end is spread over the tracts
    of its community area in proportion to that area's observed trips at that end (pickups for
    origins, dropoffs for destinations) in the same window; an OD trip with both ends suppressed
    gets the product of the two shares. A tract's community area is read off the trips that
    carry both. Rows whose start time is blank or unparsable are read but not in any window.

    Raises :class:`ExplainInputError` for a path or glob that matches no file, a file type other
    than CSV (optionally gzipped) or Parquet, an empty, binary or non-UTF-8 file, one DuckDB
    cannot parse, or a file lacking a required column.
    """
    import duckdb

    files = _expand(source.paths)
    ends = _ENDS[source.unit]
    with tempfile.TemporaryDirectory(prefix="winnow-trips-") as spill:
        config = {
            "memory_limit": source.memory_limit,
            "threads": source.threads,
            "preserve_insertion_order": False,
            "temp_directory": spill,
        }
        with duckdb.connect(config=config) as con:
            trips = _trips_relation(con, files, source)
            bounds = {name: getattr(source, name) for name in ("start", "end")}
            params = {name: value for name, value in bounds.items() if value is not None}
            with _read_errors(files):
                con.execute(_cells_sql(trips, ends, source), params | _file_params(files))
            totals = _totals(con, ends)
            if totals["rows_read"] and totals["rows_unparsed"] == totals["rows_read"]:
                raise ExplainInputError(
                    f"no Trip Start Timestamp in {[str(f) for f in files]} could be parsed; "
                    f"expected {_PORTAL_TIME!r}, ISO 8601 or a Parquet TIMESTAMP"
                )
            table = con.execute(_scope_sql(ends, source) + _table_sql(ends)).df()
            lost = (0,)
            if source.suppressed == "allocate":
                lost = con.execute(_scope_sql(ends, source) + _lost_sql(ends)).fetchone()
    table = table.astype({key: "int64" for *_, key in ends} | {"observed_trips": "int64"})
    return TripCounts(
        table=table,
        level=source.level,
        unit=source.unit,
        rows_read=totals["rows_read"],
        rows_in_window=totals["rows_in_window"],
        rows_outside_chicago=totals["rows_outside_chicago"],
        rows_suppressed=totals["rows_suppressed"],
        rows_allocated=float(table["trips"].sum() - table["observed_trips"].sum()),
        rows_unallocatable=int(lost[0] or 0),
        days=_days(source, totals["first"], totals["last"]),
    )


def _expand(patterns: list[str]) -> list[Path]:
    """Files named by ``patterns`` (globs expanded, sorted, duplicates once), type-checked."""
    files: list[Path] = []
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser())
        if glob.has_magic(expanded):
            matches = sorted(Path(match) for match in glob.glob(expanded, recursive=True))
            if not matches:
                raise ExplainInputError(f"no file matches the glob {pattern!r}")
        elif Path(expanded).is_file():
            matches = [Path(expanded)]
        else:
            raise ExplainInputError(f"trip file {pattern!r} does not exist")
        files += [match for match in matches if match not in files]
    for path in files:
        if _suffix(path) not in _READERS:
            raise ExplainInputError(
                f"{path} is not a supported trip file; give {', '.join(_READERS)} files"
            )
        check = check_parquet if _suffix(path) == ".parquet" else check_text_table
        check(path, "trip file")
    return files


@contextmanager
def _read_errors(files: list[Path]) -> Iterator[None]:
    """DuckDB's parse errors (a bad byte deep in a file) as one line naming the file(s)."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "unicode" in line.lower()), lines[0])
        named = str(files[0]) if len(files) == 1 else f"one of {[str(f) for f in files]}"
        raise ExplainInputError(
            f"trip file {named} could not be read ({reason}); give UTF-8 CSV files in the "
            "portal's layout or Parquet files (re-save a Latin-1 file with iconv -f latin1 "
            "-t utf-8)"
        ) from None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def _file_params(files: list[Path]) -> dict[str, list[str]]:
    return {f"files{i}": [str(path)] for i, path in enumerate(files)}


def _required(source: TripSource) -> list[str]:
    ends = [end for _, end, _ in _ENDS[source.unit]]
    columns = ["trip_start_timestamp", *(f"{end}_community_area" for end in ends)]
    if source.level == "tract":
        columns += [f"{end}_census_tract" for end in ends]
    return columns + [column for column, _ in _ATTRIBUTES.values()]


def _trips_relation(con, files: list[Path], source: TripSource) -> str:
    """SQL of one relation of typed trip columns over all files, after checking each schema."""
    parts = []
    for i, path in enumerate(files):
        reader = _READERS[_suffix(path)].replace("$files", f"$files{i}")
        with _read_errors([path]):
            described = con.execute(
                f"DESCRIBE SELECT * FROM {reader}", {f"files{i}": [str(path)]}
            ).fetchall()
        found = {_normalise(name): (name, dtype) for name, dtype, *_ in described}
        missing = [column for column in _required(source) if column not in found]
        if missing:
            named = ", ".join(f"{c.replace('_', ' ').title()!r} ({c})" for c in missing)
            raise ExplainInputError(
                f"{path} lacks the column(s) {named}; columns found: "
                f"{', '.join(name for name, *_ in described)}"
            )
        parts.append(f"SELECT {', '.join(_typed_columns(found, source))} FROM {reader}")
    return "\nUNION ALL\n".join(parts)


def _normalise(name: str) -> str:
    return "_".join(name.strip().lower().split())


def _typed_columns(found: dict[str, tuple[str, str]], source: TripSource) -> list[str]:
    def raw(column: str) -> str:
        return '"' + found[column][0].replace('"', '""') + '"'

    def is_text(column: str) -> bool:
        return found[column][1] == "VARCHAR"

    start = raw("trip_start_timestamp")
    if is_text("trip_start_timestamp"):
        start = f"coalesce(try_strptime({start}, '{_PORTAL_TIME}'), TRY_CAST({start} AS TIMESTAMP))"
    columns = [f"CAST({start} AS TIMESTAMP) AS start_ts"]
    for _, end, _ in _ENDS[source.unit]:
        area = raw(f"{end}_community_area")
        columns.append(f"TRY_CAST(TRY_CAST({area} AS DOUBLE) AS INTEGER) AS {end}_area")
        if source.level == "tract":
            tract = raw(f"{end}_census_tract")
            columns.append(f"TRY_CAST(TRY_CAST({tract} AS DOUBLE) AS BIGINT) AS {end}_tract")
    for column, kind in _ATTRIBUTES.values():
        target = "BOOLEAN" if kind == "flag" else "DOUBLE"
        value = f"TRY_CAST({raw(column)} AS {target})"
        if is_text(column) and kind == "number":  # "1,234" and "$12.50"; evaluated only if NULL
            bare = f"replace(replace({raw(column)}, ',', ''), '$', '')"
            value = f"coalesce({value}, TRY_CAST({bare} AS DOUBLE))"
        columns.append(f"{value} AS {column}")
    return columns


def _cells_sql(trips: str, ends: tuple, source: TripSource) -> str:
    """One pass over the files: counts and attribute sums per (window, area, unit) cell.

    ``in_window`` is NULL for rows without a parsed start time; out-of-window rows share one
    cell because their area and unit are set to NULL.
    """
    bounds = ["TRUE"]
    if source.start is not None:
        bounds.append("start_ts >= $start")
    if source.end is not None:
        bounds.append("start_ts < $end")
    window = f"CASE WHEN start_ts IS NOT NULL THEN {' AND '.join(bounds)} END"
    keys = []
    for code, end, _ in ends:
        unit = f"{end}_tract" if source.level == "tract" else f"{end}_area"
        keys += [
            f"CASE WHEN in_window THEN {end}_area END AS area_{code}",
            f"CASE WHEN in_window THEN {unit} END AS key_{code}",
        ]
    sums = []
    for column, kind in _ATTRIBUTES.values():
        value = f"CAST({column} AS INTEGER)" if kind == "flag" else column
        sums += [f"sum({value}) AS {column}_sum", f"count({column}) AS {column}_n"]
    return f"""
        CREATE TEMP TABLE cells AS
        SELECT in_window, {", ".join(keys)}, count(*) AS n,
               min(start_ts) AS first_ts, max(start_ts) AS last_ts, {", ".join(sums)}
        FROM (SELECT *, {window} AS in_window FROM ({trips}))
        GROUP BY ALL
    """


def _totals(con, ends: tuple) -> dict:
    in_chicago = " AND ".join(f"area_{code} IS NOT NULL" for code, *_ in ends)
    suppressed = " OR ".join(f"key_{code} IS NULL" for code, *_ in ends)
    row = con.execute(f"""
        SELECT coalesce(sum(n), 0),
               coalesce(sum(n) FILTER (WHERE in_window IS NULL), 0),
               coalesce(sum(n) FILTER (WHERE in_window), 0),
               coalesce(sum(n) FILTER (WHERE in_window AND NOT ({in_chicago})), 0),
               coalesce(sum(n) FILTER (WHERE in_window AND {in_chicago} AND ({suppressed})), 0),
               min(first_ts) FILTER (WHERE in_window), max(last_ts) FILTER (WHERE in_window)
        FROM cells
    """).fetchone()
    names = ("rows_read", "rows_unparsed", "rows_in_window", "rows_outside_chicago")
    totals = {name: int(value) for name, value in zip(names, row[:4], strict=True)}
    return totals | {"rows_suppressed": int(row[4]), "first": row[5], "last": row[6]}


def _observed_only(code: str) -> str:
    return f"SELECT area, key AS key_in, key AS key_out, 1.0 AS w FROM obs_{code}"


def _observed_and_shares(code: str) -> str:
    return (
        _observed_only(code) + "\nUNION ALL\n"
        f"SELECT area, NULL, key, n / sum(n) OVER (PARTITION BY area) FROM obs_{code}"
    )


# How a row with a suppressed tract reaches the tracts: drop it, or spread it by shares.
# At community-area level no row is suppressed, so both give the observed rows unchanged.
_SPREADS = {"drop": _observed_only, "allocate": _observed_and_shares}


def _scope_sql(ends: tuple, source: TripSource) -> str:
    """CTEs: in-window trips in Chicago, observed units per end, and each end's spread."""
    in_chicago = " AND ".join(f"area_{code} IS NOT NULL" for code, *_ in ends)
    spread = _SPREADS[source.suppressed]
    ctes = [f"scope AS (SELECT * FROM cells WHERE in_window AND {in_chicago})"]
    for code, *_ in ends:
        ctes += [
            f"obs_{code} AS (SELECT area_{code} AS area, key_{code} AS key, sum(n) AS n "
            f"FROM scope WHERE key_{code} IS NOT NULL GROUP BY ALL)",
            f"spread_{code} AS ({spread(code)})",
        ]
    return "WITH " + ",\n".join(ctes) + "\n"


def _table_sql(ends: tuple) -> str:
    codes = [code for code, *_ in ends]
    observed = " AND ".join(f"c.key_{code} IS NOT NULL" for code in codes)
    weight = " * ".join(["c.n", *(f"s_{code}.w" for code in codes)])
    keys = [f"s_{code}.key_out AS {key}" for code, _, key in ends]
    means = [
        f"CAST(sum(c.{column}_sum) FILTER (WHERE {observed}) AS DOUBLE)"
        f" / nullif(sum(c.{column}_n) FILTER (WHERE {observed}), 0) AS {name}"
        for name, (column, _) in _ATTRIBUTES.items()
    ]
    joins = "".join(
        f" JOIN spread_{code} s_{code} ON c.area_{code} = s_{code}.area"
        f" AND c.key_{code} IS NOT DISTINCT FROM s_{code}.key_in"
        for code in codes
    )
    return f"""
        SELECT {", ".join(keys)}, CAST(sum({weight}) AS DOUBLE) AS trips,
               CAST(coalesce(sum(c.n) FILTER (WHERE {observed}), 0) AS BIGINT) AS observed_trips,
               {", ".join(means)}
        FROM scope c{joins}
        GROUP BY ALL ORDER BY {", ".join(key for *_, key in ends)}
    """


def _lost_sql(ends: tuple) -> str:
    lost = " OR ".join(
        f"(key_{code} IS NULL AND area_{code} NOT IN (SELECT area FROM obs_{code}))"
        for code, *_ in ends
    )
    return f"SELECT sum(n) FROM scope WHERE {lost}"


def _days(source: TripSource, first: datetime | None, last: datetime | None) -> float:
    start = source.start or first
    end = source.end or (last + _TIME_STEP if last is not None else None)
    if start is None or end is None:
        return 0.0
    return (end - start) / timedelta(days=1)
