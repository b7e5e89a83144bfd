"""Trip-file ingest: counts, means, window, suppressed tracts and errors, checked by hand.

The fixture is 15 trips in the portal's CSV layout. Tracts: A, B in community area 8, C, E in
32, D in 76; area 77 has a suppressed pickup but no observed tract. Every expected number below
is worked out from the rows by hand, in the comments beside it.
"""

import csv
import gzip
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from winnow.explain.exceptions import ExplainInputError
from winnow.explain.trips import PORTAL_COLUMNS, TripCounts, TripSource, aggregate_trips

A, B, C, D, E = 17031081500, 17031081600, 17031320100, 17031980000, 17031320400

# start, pickup tract, dropoff tract, pickup area, dropoff area, miles, seconds, fare, shared
TRIPS = [
    ("01/05/2024 08:00:00 AM", A, C, "8", "32", 2.0, 600, 10.0, "false"),  # 1
    ("01/05/2024 08:15:00 AM", A, C, "8", "32", 3.0, 900, 12.5, "true"),  # 2
    ("01/10/2024 05:30:00 PM", A, B, "8.0", "8", 1.0, 300, 5.0, "false"),  # 3
    ("01/12/2024 11:45:00 PM", B, A, "8", "8", 1.5, 420, 7.5, "false"),  # 4
    ("01/15/2024 12:00:00 AM", "", C, "8", "32", 2.5, 700, 10.0, "false"),  # 5: origin sup.
    ("01/15/2024 12:00:00 PM", "", "", "8", "32", 4.0, 1000, 15.0, "true"),  # 6: both sup.
    ("01/20/2024 03:15:00 PM", C, A, "32", "8", 2.0, 650, 10.0, "false"),  # 7
    ("01/20/2024 03:15:00 PM", "1.70313201E10", "", "32", "8", 2.2, 660, 10.0, "false"),  # 8
    ("01/25/2024 06:00:00 AM", f"{D}.0", A, "76", "8", 17.0, 2400, 40.0, "false"),  # 9
    ("01/25/2024 07:00:00 AM", "", A, "", "8", 20.0, 3000, 45.0, "false"),  # 10: from outside
    ("01/26/2024 09:00:00 AM", C, "", "32", "", 15.0, 1800, 30.0, "false"),  # 11: to outside
    ("02/01/2024 12:00:00 AM", A, C, "8", "32", 2.0, 600, 10.0, "false"),  # 12: after January
    ("12/31/2023 11:45:00 PM", C, A, "32", "8", 2.0, 600, 10.0, "false"),  # 13: before
    ("01/28/2024 10:00:00 AM", "", A, "77", "8", 5.0, 900, 12.5, "false"),  # 14: unallocatable
    ("01/29/2024 01:00:00 PM", D, E, "76", "32", 18.0, 2500, 42.5, "true"),  # 15
]
JANUARY = {"start": datetime(2024, 1, 1), "end": datetime(2024, 2, 1)}


def portal_row(number: int, trip: tuple) -> dict:
    start, o_tract, d_tract, o_area, d_area, miles, seconds, fare, shared = trip
    row = dict.fromkeys(PORTAL_COLUMNS, "")
    row |= {
        "Trip ID": f"trip{number:03d}",
        "Trip Start Timestamp": start,
        "Trip End Timestamp": start,
        "Trip Seconds": str(seconds),
        "Trip Miles": str(miles),
        "Pickup Census Tract": str(o_tract),
        "Dropoff Census Tract": str(d_tract),
        "Pickup Community Area": o_area,
        "Dropoff Community Area": d_area,
        "Fare": str(fare),
        "Tip": "0",
        "Trip Total": str(fare),
        "Shared Trip Authorized": shared,
        "Shared Trip Match": "false",
        "Trips Pooled": "1",
    }
    return row


def write_csv(path, trips=TRIPS, columns=PORTAL_COLUMNS, first=1):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(portal_row(first + i, trip) for i, trip in enumerate(trips))
    return path


def write_parquet(path, trips=TRIPS, timestamps="timestamp"):
    """The API's layout: snake_case names, a real TIMESTAMP (or ISO text), float tracts."""
    frame = pd.DataFrame([portal_row(i + 1, trip) for i, trip in enumerate(trips)])
    frame.columns = [name.lower().replace(" ", "_") for name in frame.columns]
    start = pd.to_datetime(frame["trip_start_timestamp"], format="%m/%d/%Y %I:%M:%S %p")
    frame["trip_start_timestamp"] = (
        start if timestamps == "timestamp" else start.dt.strftime("%Y-%m-%dT%H:%M:%S.000")
    )
    for column in ("pickup_census_tract", "dropoff_census_tract", "trip_miles", "fare"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("pickup_community_area", "dropoff_community_area"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["trip_seconds"] = frame["trip_seconds"].astype("int64")
    frame["shared_trip_authorized"] = frame["shared_trip_authorized"] == "true"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def trips_csv(tmp_path):
    return write_csv(tmp_path / "trips.csv")


def aggregate(path, **settings) -> TripCounts:
    return aggregate_trips(TripSource(paths=[str(path)], **(JANUARY | settings)))


def keyed(counts: TripCounts, column: str) -> dict:
    keys = ["origin", "destination"] if counts.unit == "od" else ["origin"]
    rows = counts.table.set_index(keys)[column]
    return {key: pytest.approx(value) for key, value in rows.items()}


def check_sum_invariant(counts: TripCounts, suppressed: str) -> None:
    lost = counts.rows_suppressed if suppressed == "drop" else counts.rows_unallocatable
    expected = counts.rows_in_window - counts.rows_outside_chicago - lost
    assert counts.table["trips"].sum() == pytest.approx(expected)
    assert counts.rows_allocated == pytest.approx(
        counts.table["trips"].sum() - counts.table["observed_trips"].sum()
    )


def test_community_area_pickups_and_means(trips_csv):
    counts = aggregate(trips_csv)
    # Rows 12 and 13 fall outside January; row 10 starts outside Chicago.
    assert (counts.rows_read, counts.rows_in_window, counts.rows_outside_chicago) == (15, 13, 1)
    assert (counts.rows_suppressed, counts.rows_allocated, counts.rows_unallocatable) == (0, 0, 0)
    assert counts.days == 31.0
    assert list(counts.table.columns) == [
        "origin",
        "trips",
        "observed_trips",
        "mean_trip_miles",
        "mean_trip_seconds",
        "mean_fare",
        "share_shared_authorized",
    ]
    assert counts.table["origin"].dtype == "int64"
    assert counts.table["observed_trips"].dtype == "int64"
    assert keyed(counts, "trips") == {8: 6, 32: 3, 76: 2, 77: 1}  # rows 1-6 | 7,8,11 | 9,15 | 14
    assert keyed(counts, "observed_trips") == {8: 6, 32: 3, 76: 2, 77: 1}
    assert keyed(counts, "mean_trip_miles") == {
        8: (2 + 3 + 1 + 1.5 + 2.5 + 4) / 6,
        32: (2 + 2.2 + 15) / 3,
        76: (17 + 18) / 2,
        77: 5.0,
    }
    assert keyed(counts, "mean_trip_seconds")[8] == (600 + 900 + 300 + 420 + 700 + 1000) / 6
    assert keyed(counts, "mean_fare") == {8: 60 / 6, 32: 50 / 3, 76: 82.5 / 2, 77: 12.5}
    assert keyed(counts, "share_shared_authorized") == {8: 2 / 6, 32: 0, 76: 0.5, 77: 0}
    check_sum_invariant(counts, "allocate")


def test_community_area_od(trips_csv):
    counts = aggregate(trips_csv, unit="od")
    assert counts.rows_outside_chicago == 2  # rows 10 and 11
    assert keyed(counts, "trips") == {
        (8, 8): 2,  # rows 3, 4
        (8, 32): 4,  # rows 1, 2, 5, 6
        (32, 8): 2,  # rows 7, 8
        (76, 8): 1,
        (76, 32): 1,
        (77, 8): 1,
    }
    assert keyed(counts, "mean_fare")[(8, 32)] == (10 + 12.5 + 10 + 15) / 4
    assert keyed(counts, "share_shared_authorized")[(8, 32)] == 0.5
    check_sum_invariant(counts, "allocate")


def test_tract_pickups_allocate_spreads_suppressed_by_pickup_shares(trips_csv):
    counts = aggregate(trips_csv, level="tract")
    # Area 8: A has 3 observed pickups (rows 1-3), B 1 (row 4); rows 5, 6 are suppressed there,
    # so A gets 2 * 3/4 and B 2 * 1/4. Row 14's area 77 has no observed tract: lost.
    assert keyed(counts, "trips") == {A: 4.5, B: 1.5, C: 3, D: 2}
    assert keyed(counts, "observed_trips") == {A: 3, B: 1, C: 3, D: 2}
    assert keyed(counts, "mean_trip_miles") == {A: 2.0, B: 1.5, C: 19.2 / 3, D: 17.5}
    assert (counts.rows_suppressed, counts.rows_unallocatable) == (3, 1)
    assert counts.rows_allocated == pytest.approx(2.0)
    check_sum_invariant(counts, "allocate")


def test_tract_pickups_drop(trips_csv):
    counts = aggregate(trips_csv, level="tract", suppressed="drop")
    assert keyed(counts, "trips") == {A: 3, B: 1, C: 3, D: 2}
    assert (counts.rows_suppressed, counts.rows_allocated, counts.rows_unallocatable) == (3, 0, 0)
    check_sum_invariant(counts, "drop")


def test_tract_od_allocate_uses_end_shares_and_their_product(trips_csv):
    counts = aggregate(trips_csv, level="tract", unit="od")
    # Pickup shares (in-Chicago OD trips): area 8 A 3/4, B 1/4. Dropoff shares: area 8 A 4/5
    # (rows 4, 7, 9, 14), B 1/5 (row 3); area 32 C 3/4 (rows 1, 2, 5), E 1/4 (row 15).
    # Row 5 (? -> C) spreads by pickup shares, row 8 (C -> ?) by dropoff shares, row 6 (? -> ?)
    # by their products; row 14's origin area 77 has no observed pickup tract.
    assert keyed(counts, "trips") == {
        (A, B): 1,
        (A, C): 2 + 0.75 + 0.75 * 0.75,
        (A, E): 0.75 * 0.25,
        (B, A): 1,
        (B, C): 0.25 + 0.25 * 0.75,
        (B, E): 0.25 * 0.25,
        (C, A): 1 + 0.8,
        (C, B): 0.2,
        (D, A): 1,
        (D, E): 1,
    }
    observed = keyed(counts, "observed_trips")
    assert observed[(A, C)] == 2 and observed[(B, E)] == 0
    means = counts.table.set_index(["origin", "destination"])
    assert means.loc[(A, C), "mean_trip_seconds"] == 750
    assert means.loc[(B, C)].drop(["trips", "observed_trips"]).isna().all()
    assert (counts.rows_suppressed, counts.rows_unallocatable) == (4, 1)  # rows 5, 6, 8, 14
    assert counts.rows_allocated == pytest.approx(3.0)
    check_sum_invariant(counts, "allocate")


def test_tract_od_drop(trips_csv):
    counts = aggregate(trips_csv, level="tract", unit="od", suppressed="drop")
    assert keyed(counts, "trips") == {
        (A, B): 1,
        (A, C): 2,
        (B, A): 1,
        (C, A): 1,
        (D, A): 1,
        (D, E): 1,
    }
    check_sum_invariant(counts, "drop")


def test_window_is_start_inclusive_end_exclusive(trips_csv):
    counts = aggregate(trips_csv, start=datetime(2024, 1, 15), end=datetime(2024, 1, 20, 15, 15))
    assert counts.rows_in_window == 2  # rows 5 (at the start) and 6; 7, 8 start at the end
    assert keyed(counts, "trips") == {8: 2}
    assert counts.days == pytest.approx(5 + 15.25 / 24)
    before = aggregate(trips_csv, start=datetime(2024, 1, 12), end=datetime(2024, 1, 15))
    assert before.rows_in_window == 1  # row 4 only
    unbounded = aggregate_trips(TripSource(paths=str(trips_csv)))
    assert unbounded.rows_in_window == 15
    # 2023-12-31 23:45 to the end of the last 15-minute slot, 2024-02-01 00:15.
    assert unbounded.days == pytest.approx(31 + 0.5 / 24)


@pytest.mark.parametrize("timestamps", ["timestamp", "iso"])
@pytest.mark.parametrize(("level", "unit"), [("tract", "od"), ("community_area", "pickups")])
def test_parquet_with_api_names_matches_csv(trips_csv, tmp_path, timestamps, level, unit):
    parquet = write_parquet(tmp_path / "trips.parquet", timestamps=timestamps)
    from_csv = aggregate(trips_csv, level=level, unit=unit)
    from_parquet = aggregate(parquet, level=level, unit=unit)
    pd.testing.assert_frame_equal(from_parquet.table, from_csv.table)
    assert from_parquet.rows_suppressed == from_csv.rows_suppressed
    assert from_parquet.rows_unallocatable == from_csv.rows_unallocatable


def test_glob_of_parts_equals_whole(trips_csv, tmp_path):
    write_csv(tmp_path / "part-1.csv", TRIPS[:7])
    write_csv(tmp_path / "part-2.csv", TRIPS[7:], first=8)
    whole = aggregate(trips_csv, level="tract", unit="od")
    for paths in (
        [str(tmp_path / "part-*.csv")],
        [str(tmp_path / "part-1.csv"), str(tmp_path / "part-2.csv")],
    ):
        parts = aggregate_trips(TripSource(paths=paths, level="tract", unit="od", **JANUARY))
        pd.testing.assert_frame_equal(parts.table, whole.table)
        assert parts.rows_read == whole.rows_read


def test_csv_and_parquet_mixed_equal_whole(trips_csv, tmp_path):
    write_csv(tmp_path / "part-1.csv", TRIPS[:7])
    write_parquet(tmp_path / "part-2.parquet", TRIPS[7:])
    paths = [str(tmp_path / "part-1.csv"), str(tmp_path / "part-2.parquet")]
    mixed = aggregate_trips(TripSource(paths=paths, level="tract", **JANUARY))
    pd.testing.assert_frame_equal(mixed.table, aggregate(trips_csv, level="tract").table)


def test_older_files_without_percent_columns(tmp_path):
    columns = [name for name in PORTAL_COLUMNS if not name.startswith("Percent")]
    counts = aggregate(write_csv(tmp_path / "2019.csv", columns=columns))
    assert keyed(counts, "trips") == {8: 6, 32: 3, 76: 2, 77: 1}


def test_window_with_no_trips_gives_an_empty_table(trips_csv):
    counts = aggregate(trips_csv, level="tract", start=datetime(2030, 1, 1), end=None)
    assert counts.table.empty and counts.rows_in_window == 0
    assert counts.table["origin"].dtype == "int64"


def test_missing_column_is_named(tmp_path):
    columns = [name for name in PORTAL_COLUMNS if name != "Dropoff Census Tract"]
    path = write_csv(tmp_path / "no_dropoff_tract.csv", columns=columns)
    aggregate(path, level="tract")  # pickups need no dropoff tract
    with pytest.raises(ExplainInputError) as error:
        aggregate(path, level="tract", unit="od")
    message = str(error.value)
    assert "'Dropoff Census Tract' (dropoff_census_tract)" in message
    assert "no_dropoff_tract.csv" in message and "Pickup Census Tract" in message


@pytest.mark.parametrize("name", ["trips.xlsx", "trips.json"])
def test_unsupported_file_type(tmp_path, name):
    (tmp_path / name).write_text("{}")
    with pytest.raises(ExplainInputError, match=rf"{name} is not a supported.*\.csv"):
        aggregate(tmp_path / name)


def test_no_file_matches(tmp_path):
    with pytest.raises(ExplainInputError, match=r"no file matches the glob .*nothing-\*\.csv"):
        aggregate(tmp_path / "nothing-*.csv")
    with pytest.raises(ExplainInputError, match=r"absent\.parquet' does not exist"):
        aggregate(tmp_path / "absent.parquet")


def test_unparsable_timestamps_are_an_error(tmp_path):
    trips = [("05.01.2024 08:00", *trip[1:]) for trip in TRIPS[:3]]
    with pytest.raises(ExplainInputError, match="no Trip Start Timestamp"):
        aggregate(write_csv(tmp_path / "odd.csv", trips))


def test_config_is_validated():
    assert TripSource(paths="a.csv").paths == ["a.csv"]
    assert TripSource(paths=[Path("a.csv"), "b/*.parquet"]).paths == ["a.csv", "b/*.parquet"]
    with pytest.raises(ValidationError, match="must be before"):
        TripSource(paths="a.csv", start=datetime(2024, 2, 1), end=datetime(2024, 1, 1))
    with pytest.raises(ValidationError):
        TripSource(paths="a.csv", levels="tract")
    with pytest.raises(ValidationError):
        TripSource(paths="a.csv", memory_limit="lots")


def test_money_and_thousands_separators_parse(tmp_path):
    trips = [(*trip[:5], "1,002.5", "1,200", "$1,012.50", trip[8]) for trip in TRIPS[:4]]
    counts = aggregate(write_csv(tmp_path / "formatted.csv", trips))
    assert keyed(counts, "mean_fare") == {8: 1012.5}
    assert keyed(counts, "mean_trip_miles") == {8: 1002.5}
    assert keyed(counts, "mean_trip_seconds") == {8: 1200}


def test_gzipped_csv_and_header_only_file(trips_csv, tmp_path):
    packed = tmp_path / "trips.csv.gz"
    packed.write_bytes(gzip.compress(trips_csv.read_bytes()))
    pd.testing.assert_frame_equal(aggregate(packed).table, aggregate(trips_csv).table)
    empty = aggregate(write_csv(tmp_path / "empty.csv", trips=[]), level="tract", unit="od")
    assert empty.rows_read == 0 and empty.table.empty and empty.days == 31.0
