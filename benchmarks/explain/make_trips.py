"""Write a SYNTHETIC trip file in the layout of Chicago's TNP trips, for benchmarks and tests.

No row is a real trip. The file copies the City of Chicago portal's *Transportation Network
Providers - Trips* layout: its 24 columns in order, its timestamp format ("01/31/2024 11:45:00
PM", rounded to 15 minutes, here within January 2024), fares rounded to $2.50 and tips to $1.
Only the geography is real: pickups fall in community areas in proportion to their real January
2024 rideshare pickups (tnp_trips_per_1000_by_community_area_jan2024.csv), on the real tracts of
each area (community_area_to_tract.csv) with seeded random weights, with tract centroids from
tract_land_area.csv. About 5% of trip ends have the tract suppressed (blank, community area
kept, centroid of the area) and about 1% lie outside Chicago (tract and area blank).

    .venv/bin/python benchmarks/explain/make_trips.py --rows 10000000 \\
        --out /tmp/synthetic_tnp_trips.csv
    .venv/bin/python benchmarks/explain/make_trips.py --rows 1000000 --format parquet \\
        --out /tmp/synthetic_tnp_trips.parquet

``--format parquet`` writes the API's snake_case names with real TIMESTAMP columns instead.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from winnow.common.data import data_file
from winnow.explain.trips import PORTAL_COLUMNS

DEFAULT_OUT = Path("synthetic_tnp_trips.csv")
MONTH_START = np.datetime64("2024-01-01T00:00:00")
SLOT = np.timedelta64(15, "m")
DAYS = 31
SUPPRESSED = 0.05  # share of trip ends whose tract is blank
OUTSIDE = 0.01  # share of trip ends outside Chicago
SAME_AREA = 0.35  # share of trips ending in the area they start in
SHARED_AUTHORIZED = 0.10
# Relative pickups by hour of day (night low, morning and evening peaks, late-night Friday-ish).
HOURLY = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 5, 4.5, 5, 5.5, 5.5, 5.5, 6, 7, 7.5, 7, 6.5, 6, 6, 5.5, 4.5]
)


@dataclass(frozen=True)
class Geography:
    """Tracts sorted by community area, with sampling weights and centroids."""

    tract: np.ndarray  # [T] int64 GEOID
    area: np.ndarray  # [T] int community area 1-77
    probability: np.ndarray  # [T] pickup probability (area share x tract weight in area)
    block_cdf: np.ndarray  # [T] area index + cumulative weight within the area, in (a, a + 1]
    area_index: np.ndarray  # [T] position of the tract's area in `areas`
    areas: np.ndarray  # [A] community areas
    lat: np.ndarray  # [T]
    lon: np.ndarray  # [T]
    area_lat: np.ndarray  # [A] mean of the area's tract centroids
    area_lon: np.ndarray  # [A]


def load_geography(seed: int) -> Geography:
    crosswalk = pd.read_csv(data_file("ridesourcing/community_area_to_tract.csv"))
    centroids = pd.read_csv(data_file("ridesourcing/tract_land_area.csv"))
    pickups = pd.read_csv(
        data_file("ridesourcing/tnp_trips_per_1000_by_community_area_jan2024.csv")
    )
    pickups = pickups[pickups["trip_type"] == "rideshare"].set_index("pickup_ca")["trip_count"]
    tracts = (
        crosswalk[["area_num_1", "GEOID"]]
        .drop_duplicates("GEOID")
        .merge(centroids, on="GEOID", validate="one_to_one")
        .sort_values(["area_num_1", "GEOID"], ignore_index=True)
    )
    rng = np.random.default_rng(seed)
    weight = rng.gamma(1.0, size=len(tracts))
    areas, area_index = np.unique(tracts["area_num_1"].to_numpy(), return_inverse=True)
    area_total = np.bincount(area_index, weights=weight)
    within = weight / area_total[area_index]
    area_share = pickups.reindex(areas).fillna(0).to_numpy(dtype=float)
    area_share /= area_share.sum()
    cumulative = pd.Series(within).groupby(area_index).cumsum().to_numpy()
    lat, lon = tracts["INTPTLAT"].to_numpy(), tracts["INTPTLON"].to_numpy()
    counts = np.bincount(area_index)
    return Geography(
        tract=tracts["GEOID"].to_numpy(dtype=np.int64),
        area=tracts["area_num_1"].to_numpy(),
        probability=area_share[area_index] * within,
        block_cdf=area_index + cumulative,
        area_index=area_index,
        areas=areas,
        lat=lat,
        lon=lon,
        area_lat=np.bincount(area_index, weights=lat) / counts,
        area_lon=np.bincount(area_index, weights=lon) / counts,
    )


def _trip_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``[n]`` 40-character hex ids, like the portal's."""
    digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    raw = rng.integers(0, 256, size=(n, 20), dtype=np.uint8)
    chars = np.empty((n, 40), dtype="S1")
    chars[:, 0::2], chars[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    return pa.array(chars.view("S40").ravel(), pa.binary(40)).cast(pa.string())


def _end(rng, geo: Geography, tract_idx: np.ndarray) -> dict[str, pa.Array]:
    """Tract, area and centroid columns of one trip end, with suppression and outside trips."""
    n = len(tract_idx)
    draw = rng.random(n)
    outside = draw < OUTSIDE
    suppressed = (draw >= OUTSIDE) & (draw < OUTSIDE + SUPPRESSED)
    area_idx = geo.area_index[tract_idx]
    lat = np.where(suppressed, geo.area_lat[area_idx], geo.lat[tract_idx])
    lon = np.where(suppressed, geo.area_lon[area_idx], geo.lon[tract_idx])
    lat, lon = np.round(lat, 9), np.round(lon, 9)
    point = pc.binary_join_element_wise(
        "POINT (",
        pc.cast(pa.array(lon), pa.string()),
        " ",
        pc.cast(pa.array(lat), pa.string()),
        ")",
        "",
    )
    return {
        "tract": pa.array(geo.tract[tract_idx], mask=outside | suppressed),
        "area": pa.array(geo.area[tract_idx], pa.int64(), mask=outside),
        "lat": pa.array(lat, mask=outside),
        "lon": pa.array(lon, mask=outside),
        "location": pc.if_else(pa.array(outside), pa.scalar(None, pa.string()), point),
        "outside": outside,
    }


def make_chunk(rng: np.random.Generator, n: int, geo: Geography, parquet: bool) -> pa.Table:
    """``n`` synthetic trips as a table with the portal's 24 columns (snake_case if parquet)."""
    hours = rng.choice(24, size=n, p=HOURLY / HOURLY.sum())
    start_slot = rng.integers(0, DAYS, size=n) * 96 + hours * 4 + rng.integers(0, 4, size=n)
    miles = np.clip(np.round(rng.lognormal(1.2, 0.85, size=n), 1), 0.1, 80.0)
    seconds = (miles / rng.uniform(8, 28, size=n) * 3600 + rng.integers(60, 300, size=n)).astype(
        np.int64
    )
    end_slot = start_slot + np.round(seconds / 900).astype(np.int64)
    pickup = np.searchsorted(np.cumsum(geo.probability), rng.random(n) * geo.probability.sum())
    pickup = np.minimum(pickup, len(geo.tract) - 1)
    elsewhere = np.searchsorted(np.cumsum(geo.probability), rng.random(n) * geo.probability.sum())
    nearby = np.searchsorted(geo.block_cdf, geo.area_index[pickup] + rng.random(n))
    dropoff = np.minimum(np.where(rng.random(n) < SAME_AREA, nearby, elsewhere), len(geo.tract) - 1)
    origin, destination = _end(rng, geo, pickup), _end(rng, geo, dropoff)
    leaves = origin["outside"] | destination["outside"]
    share_in_chicago = np.where(leaves, np.round(rng.uniform(0.05, 0.95, size=n), 2), 1.0)
    shared = rng.random(n) < SHARED_AUTHORIZED
    matched = shared & (rng.random(n) < 0.4)
    fare = 2.5 * np.maximum(np.round((2.5 + 1.3 * miles + 0.3 * seconds / 60) / 2.5), 1)
    fare = np.where(shared, np.maximum(fare - 2.5, 2.5), fare)
    tip = np.where(rng.random(n) < 0.3, np.round(fare * rng.uniform(0.1, 0.25, size=n)), 0.0)
    charges = np.round(rng.choice([0.0, 1.5, 2.93, 5.0], size=n, p=[0.2, 0.5, 0.2, 0.1]), 2)
    columns = [
        _trip_ids(rng, n),
        *(_timestamps(slot, parquet) for slot in (start_slot, end_slot)),
        pa.array(seconds),
        pa.array(miles),
        pa.array(share_in_chicago),
        pa.array(share_in_chicago),
        origin["tract"],
        destination["tract"],
        origin["area"],
        destination["area"],
        pa.array(fare),
        pa.array(tip),
        pa.array(charges),
        pa.array(np.round(fare + tip + charges, 2)),
        pa.array(shared),
        pa.array(matched),
        pa.array(1 + matched.astype(np.int64) * (1 + (rng.random(n) < 0.2))),
        *(end[key] for end in (origin, destination) for key in ("lat", "lon", "location")),
    ]
    names = [_snake(name) for name in PORTAL_COLUMNS] if parquet else PORTAL_COLUMNS
    return pa.table(columns, names=names)


def _timestamps(slot: np.ndarray, parquet: bool) -> pa.Array:
    """Portal text ("01/31/2024 11:45:00 PM") for CSV, a TIMESTAMP for Parquet."""
    if parquet:
        return pa.array(MONTH_START + slot * SLOT)
    table = pd.date_range(MONTH_START, periods=int(slot.max()) + 1, freq="15min")
    text = pa.array(table.strftime("%m/%d/%Y %I:%M:%S %p").to_numpy(dtype=object), pa.string())
    return text.take(pa.array(slot))


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_")


def write_trips(
    path: str | Path,
    rows: int,
    seed: int = 0,
    file_format: str = "csv",
    chunk_rows: int = 1_000_000,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Write ``rows`` synthetic trips to ``path`` in chunks; memory stays about one chunk."""
    import pyarrow.csv
    import pyarrow.parquet

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parquet = file_format == "parquet"
    geo = load_geography(seed)
    rng = np.random.default_rng(seed)
    writer = None
    try:
        for first in range(0, rows, chunk_rows):
            table = make_chunk(rng, min(chunk_rows, rows - first), geo, parquet)
            if writer is None:
                opener = pyarrow.parquet.ParquetWriter if parquet else pyarrow.csv.CSVWriter
                writer = opener(str(path), table.schema)
            writer.write_table(table)
            if on_chunk is not None:
                on_chunk(table.num_rows)
    finally:
        if writer is not None:
            writer.close()
    return path


def main() -> None:
    from winnow.common.progress import track_progress

    parser = argparse.ArgumentParser(
        description="Write a SYNTHETIC (not real) trip file in the Chicago TNP portal layout."
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--format", choices=("csv", "parquet"), default=None, help="default: suffix"
    )
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    file_format = args.format or ("parquet" if args.out.suffix == ".parquet" else "csv")
    start = time.perf_counter()
    with track_progress("synthetic trips", total=args.rows) as bar:
        write_trips(args.out, args.rows, args.seed, file_format, args.chunk_rows, bar.advance)
    size_mib = args.out.stat().st_size / 2**20
    seconds = time.perf_counter() - start
    print(
        f"wrote {args.rows:,} synthetic trips to {args.out} ({size_mib:,.0f} MiB, {seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
