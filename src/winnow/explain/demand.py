"""Explainable ridesourcing demand: which factors drive trips, and how, in each spatial context.

After Zhang, Yan, Zhou, Xu and Zhao (arXiv 2209.07980): gradient boosting on demand per unit
(pickups by tract or community area, or origin-destination pairs), SHAP importance grouped into
feature families (built environment, socio-demographics, trip attributes), and effect curves
compared between airport, downtown and neighbourhood places.

:func:`build_demand_table` joins trip counts (shipped aggregates, or raw portal trips through
:mod:`winnow.explain.trips`) to census covariates; :func:`analyse_demand` fits the models,
cross-validates them against a random forest and a linear reference, and bootstraps family
shares and partial-dependence / ALE curves per context. A context with fewer than
``min_context_rows`` rows gets no model of its own and is explained through the pooled model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from winnow.common.config import Config
from winnow.common.inputs import read_table
from winnow.explain.areas import (
    CensusFiles,
    ContextRules,
    JoinLog,
    area_features,
    label_contexts,
    load_tracts,
    sum_to_units,
)
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.trips import TripSource, aggregate_trips

__all__ = [
    "DemandJobConfig",
    "DemandTable",
    "PlaceboParams",
    "build_demand_table",
]

Level = Literal["tract", "community_area"]
TRIP_ATTRIBUTES = ["mean_trip_miles", "mean_trip_seconds", "mean_fare", "share_shared_authorized"]


class CountsTable(Config):
    """Trips already counted per unit, e.g. the shipped January 2024 pickups by area."""

    path: str = "ridesourcing/tnp_trips_per_1000_by_community_area_jan2024.csv"
    key: str = Field("pickup_ca", description="column holding the tract GEOID or area number")
    count: str = "trip_count"
    where: dict[str, str] = Field(
        default_factory=lambda: {"trip_type": "rideshare"},
        description="keep only rows whose column equals the value",
    )
    level: Level = "community_area"


class DemandSource(Config):
    """Where the trips come from: set exactly one of ``counts`` and ``trips``."""

    counts: CountsTable | None = CountsTable()
    trips: TripSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.counts is None) == (self.trips is None):
            raise ValueError(
                "set exactly one of source.counts (aggregated counts) and source.trips "
                "(raw portal trip files); set the other to null"
            )
        return self

    @property
    def level(self) -> Level:
        return self.counts.level if self.counts else self.trips.level

    @property
    def unit(self) -> str:
        return "pickups" if self.counts else self.trips.unit


class BoostingParams(Config):
    """LightGBM parameters; the defaults suit a few dozen to a few thousand rows."""

    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(8, ge=2)
    min_child_samples: int = Field(5, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)


def _default_families() -> dict[str, list[str]]:
    return {
        "built_environment": [
            "pop_density_km2",
            "job_density_km2",
            "high_wage_job_share",
            "food_job_density_km2",
            "transit_stop_density_km2",
            "rail_stops",
            "distance_to_loop_km",
        ],
        "socio_demographic": [
            "share_young_20_34",
            "share_hh_zero_veh",
            "share_ba_plus",
            "median_income",
        ],
    }


class PlaceboParams(Config):
    """Refits with one family's values shuffled across units: the share it gets as noise."""

    families: list[str] | None = Field(
        None,
        description="families to shuffle, one at a time; default: trip_attributes when it is "
        "one of `families` (a unit's mean over few trips can carry its trip count), else none",
    )
    refits: int = Field(20, ge=0, description="shuffled refits per family and model; 0: none")
    strata: Literal["none", "trip_count"] = Field(
        "none",
        description="shuffle across all units, or only among units with a similar number of "
        "observed trips (deciles; needs source.trips): the null in which the values matter "
        "only through how many trips they average",
    )


class DemandJobConfig(Config):
    """``winnow explain demand``: demand per unit explained by feature family and context."""

    seed: int = 0
    source: DemandSource = DemandSource()
    census: CensusFiles = CensusFiles()
    contexts: ContextRules = ContextRules()
    target: Literal["trips", "trips_per_km2", "trips_per_1000_residents"] = Field(
        "trips_per_km2", description="per-km² and per-resident rates need unit 'pickups'"
    )
    log_target: bool = Field(True, description="model log1p(target): counts are skewed")
    families: dict[str, list[str]] = Field(
        default_factory=_default_families,
        description="family -> features; at OD level a feature name means both of its ends, "
        f"and trip attributes ({', '.join(TRIP_ATTRIBUTES)}) need source.trips",
    )
    model: BoostingParams = BoostingParams()
    min_context_rows: int = Field(
        30, ge=5, description="smaller contexts are explained through the pooled model"
    )
    cv_folds: int = Field(5, ge=2)
    bootstrap: int = Field(200, ge=10, description="replicates for intervals")
    alpha: float = Field(0.05, gt=0, lt=1, description="1 - confidence level")
    grid_points: int = Field(15, ge=3, description="quantile grid of the effect curves")
    curve_rows: int = Field(
        300, ge=10, description="rows per context (seeded sample) whose ICE/ALE make the curves"
    )
    curves: int = Field(4, ge=1, description="effect curves drawn: the most important features")
    placebo: PlaceboParams = PlaceboParams()
    synthetic: bool = Field(
        False, description="the trips are made up (make_trips.py): the report and plots say so"
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.target != "trips" and self.source.unit == "od":
            raise ValueError("target must be 'trips' for origin-destination pairs (unit 'od')")
        seen: dict[str, str] = {}
        for family, names in self.families.items():
            if not names:
                raise ValueError(f"families.{family} is empty; list its features or remove it")
            for name in names:
                if name in seen:
                    raise ValueError(f"feature {name!r} is in families {seen[name]} and {family}")
                seen[name] = family
        if self.placebo.strata == "trip_count" and self.source.trips is None:
            raise ValueError("placebo.strata 'trip_count' needs source.trips (raw trip files)")
        unknown = sorted(set(self.placebo.families or []) - set(self.families))
        if unknown:
            raise ValueError(
                f"placebo.families {unknown} are not in families ({', '.join(self.families)})"
            )
        return self

    @property
    def placebo_families(self) -> list[str]:
        """The families the placebo shuffles (``placebo.families``, or its default)."""
        if self.placebo.refits == 0:
            return []
        if self.placebo.families is not None:
            return list(self.placebo.families)
        return [name for name in self.families if name == "trip_attributes"]


@dataclass(frozen=True)
class DemandTable:
    """Model inputs: ``X: [n, p]``, ``y: [n]``, and per row its id, context and centroid."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    families: dict[str, list[int]]
    contexts: np.ndarray
    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    target_name: str
    level: str
    unit: str
    joins: JoinLog
    source_summary: dict = field(default_factory=dict)
    observed_trips: np.ndarray | None = None  # [n] trips behind each row's means (raw trips)

    def rows(self, context: str) -> np.ndarray:
        return np.flatnonzero(self.contexts == context)


def build_demand_table(config: DemandJobConfig) -> DemandTable:
    """Join trip counts to unit covariates and contexts; every join is logged."""
    level, unit = config.source.level, config.source.unit
    log = JoinLog()
    units = sum_to_units(load_tracts(config.census, log), level)
    features = area_features(units)
    features["context"] = label_contexts(units, level, config.contexts)
    features[["lat", "lon"]] = units[["lat", "lon"]]
    counts, source_summary = _load_counts(config.source)
    if unit == "pickups":
        frame = _pickup_frame(counts, units, features, config.target, log)
    else:
        frame = _od_frame(counts, features, log)
    names, families = _feature_columns(config.families, unit, frame.columns)
    target = frame["target"].to_numpy(dtype=float)
    keep = np.isfinite(target)
    log.record(
        "rows with a defined target",
        len(frame),
        int(keep.sum()),
        frame.index[~keep].tolist(),
        f"dropped: {config.target} undefined (no land or residents)",
    )
    frame = frame[keep]
    y = frame["target"].to_numpy(dtype=float)
    return DemandTable(
        X=frame[list(names)].to_numpy(dtype=float),
        y=np.log1p(y) if config.log_target else y,
        feature_names=names,
        families=families,
        contexts=frame["context"].to_numpy(dtype=str),
        ids=frame.index.to_numpy(),
        lat=frame["lat"].to_numpy(dtype=float),
        lon=frame["lon"].to_numpy(dtype=float),
        target_name=f"log1p({config.target})" if config.log_target else config.target,
        level=level,
        unit=unit,
        joins=log,
        source_summary=source_summary,
        observed_trips=(
            frame["observed_trips"].fillna(0).to_numpy(dtype=float)
            if "observed_trips" in frame
            else None
        ),
    )


def _load_counts(source: DemandSource) -> tuple[pd.DataFrame, dict]:
    if source.trips is not None:
        result = aggregate_trips(source.trips)
        if result.table.empty:
            trips = source.trips
            raise ExplainInputError(
                f"source.trips: no trip in {trips.paths} ({result.rows_read} rows) starts in "
                f"Chicago within [{trips.start}, {trips.end}); check the files or the window"
            )
        summary = {
            name: getattr(result, name)
            for name in (
                "rows_read",
                "rows_in_window",
                "rows_outside_chicago",
                "rows_suppressed",
                "rows_allocated",
                "days",
            )
        }
        return result.table, summary
    table = source.counts
    frame = read_table(table.path, [table.key, table.count, *table.where], "source.counts")
    for column, value in table.where.items():
        frame = frame[frame[column].astype(str) == value]
    if frame.empty:
        raise ExplainInputError(f"source.counts.where {table.where} keeps no row of {table.path}")
    counts = frame.groupby(frame[table.key].astype("int64"))[table.count].sum()
    return counts.rename("trips").rename_axis("origin").reset_index(), {"file": table.path}


def _pickup_frame(counts, units, features, target: str, log: JoinLog) -> pd.DataFrame:
    counts = counts.set_index("origin")
    unknown = counts.index.difference(units.index)
    log.record(
        "trip counts + units",
        len(counts),
        len(counts) - len(unknown),
        unknown.tolist(),
        f"dropped: not a unit of the crosswalk ({counts.loc[unknown, 'trips'].sum():.0f} trips)",
    )
    frame = features.join(counts, how="left")
    no_trips = frame.index[frame["trips"].isna()].tolist()
    log.record("units + trip counts", len(features), len(frame), no_trips, "no trips: set to 0")
    frame["trips"] = frame["trips"].fillna(0.0)
    if target == "trips":
        frame["target"] = frame["trips"]
    else:
        per = units["land_km2"] if target == "trips_per_km2" else units["population"] / 1000
        frame["target"] = frame["trips"] / per.replace(0.0, np.nan)
    return frame


def _od_frame(counts: pd.DataFrame, features: pd.DataFrame, log: JoinLog) -> pd.DataFrame:
    ends = {}
    for end in ("origin", "destination"):
        known = counts[end].isin(features.index)
        ends[end] = known
        log.record(
            f"OD pairs: {end} is a unit",
            len(counts),
            int(known.sum()),
            counts.loc[~known, end].unique().tolist(),
            "dropped: not a unit of the crosswalk",
        )
    pairs = counts[ends["origin"] & ends["destination"]]
    origin = features.loc[pairs["origin"]].add_prefix("origin_").reset_index(drop=True)
    dest = features.loc[pairs["destination"]].add_prefix("destination_").reset_index(drop=True)
    frame = pd.concat([pairs.reset_index(drop=True), origin, dest], axis=1)
    frame.index = pairs["origin"].astype(str).str.cat(pairs["destination"].astype(str), "-")
    contexts = frame[["origin_context", "destination_context"]].to_numpy()
    frame["context"] = np.select(
        [(contexts == "airport").any(axis=1), (contexts == "downtown").any(axis=1)],
        ["airport", "downtown"],
        "neighborhood",
    )
    frame["target"] = frame["trips"]
    frame["lat"], frame["lon"] = frame["origin_lat"], frame["origin_lon"]
    return frame


def _feature_columns(families, unit: str, available) -> tuple[tuple[str, ...], dict]:
    names: list[str] = []
    indices: dict[str, list[int]] = {}
    for family, features in families.items():
        columns = []
        for feature in features:
            expanded = (
                [feature]
                if unit == "pickups" or feature in TRIP_ATTRIBUTES
                else [f"origin_{feature}", f"destination_{feature}"]
            )
            columns += expanded
        absent = [c for c in columns if c not in available]
        if absent:
            hidden = ("target", "context", "trips", "observed_trips")
            offered = sorted(c for c in available if c not in hidden)
            hint = (
                " (trip attributes need source.trips)" if set(absent) & set(TRIP_ATTRIBUTES) else ""
            )
            raise ExplainInputError(
                f"families.{family}: {absent} are not columns of the demand table{hint}; "
                f"available: {', '.join(offered)}"
            )
        indices[family] = list(range(len(names), len(names) + len(columns)))
        names += columns
    return tuple(names), indices
