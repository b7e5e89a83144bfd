"""Census covariates of Chicago's tracts and community areas, and their spatial context.

Tract tables (ACS 2019, LEHD workplace jobs, GTFS transit stops, TIGER land area) are joined
on the 11-digit GEOID of the community-area crosswalk, summed to the unit of analysis (a tract
or a community area) and turned into densities and shares. Every join is logged in a
:class:`JoinLog`: rows before and after, and which keys found no match and what was done about
them, so that no row is lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from winnow.common.config import Config
from winnow.common.inputs import read_table
from winnow.explain.exceptions import ExplainInputError

__all__ = [
    "CONTEXTS",
    "CensusFiles",
    "ContextRules",
    "JoinLog",
    "area_features",
    "label_contexts",
    "load_tracts",
    "sum_to_units",
]

Level = Literal["tract", "community_area"]
CONTEXTS = ("airport", "downtown", "neighborhood")
# The Loop's centre (State and Madison), the origin of Chicago's street grid.
LOOP_LAT_LON = (41.8820, -87.6278)
EARTH_RADIUS_KM = 6371.0

# Tract counts that add up over tracts; the rest (lat, lon, median income) are averaged.
ADDITIVE = [
    "population",
    "pop_20_34",
    "pop_25_plus",
    "pop_25_plus_ba",
    "households",
    "households_zero_vehicle",
    "jobs",
    "jobs_high_wage",
    "jobs_food_accommodation",
    "transit_stops",
    "rail_stops",
    "land_km2",
    "downtown_tracts",
]


class CensusFiles(Config):
    """Where the tract covariates are: paths, or '<data set>/<file>' under the data root."""

    acs: str = "ridesourcing/tract_acs2019.csv"
    jobs: str = Field(
        "ridesourcing/tract_lehd_wac_monthly.csv",
        description="LEHD workplace area characteristics by tract and month (TRACTCE10)",
    )
    jobs_year: int = Field(2019, description="months of this year are averaged")
    transit: str = "ridesourcing/tract_transit_stops_2019.csv"
    land: str = "ridesourcing/tract_land_area.csv"
    crosswalk: str = "ridesourcing/community_area_to_tract.csv"
    downtown: str = "ridesourcing/downtown_zone_tracts.csv"
    county_fips: str = Field("17031", description="state+county prefix of the 6-digit TRACTCE10")


class ContextRules(Config):
    """Which places are airports; downtown is the city's TNP Downtown Zone (CensusFiles)."""

    airport_areas: list[int] = Field(
        default_factory=lambda: [76, 56], description="O'Hare, Garfield Ridge (Midway)"
    )
    airport_tracts: list[int] = Field(
        default_factory=lambda: [17031980000, 17031980100], description="O'Hare, Midway"
    )


@dataclass
class JoinLog:
    """What each join did: one entry per join, in order."""

    entries: list[dict] = field(default_factory=list)

    def record(self, step: str, before: int, after: int, unmatched: list, action: str) -> None:
        self.entries.append(
            {
                "step": step,
                "rows_before": before,
                "rows_after": after,
                "unmatched": len(unmatched),
                "unmatched_keys": ", ".join(map(str, unmatched[:8]))
                + (" ..." if len(unmatched) > 8 else ""),
                "action": action if unmatched else "",
            }
        )


def load_tracts(files: CensusFiles, log: JoinLog) -> pd.DataFrame:
    """One row per crosswalk tract (index GEOID) with raw counts and its community area.

    Transit stops and jobs are zero where a tract is absent from those tables (they list only
    tracts with stops or jobs); a tract missing from the ACS or land table is an error.
    """
    crosswalk = read_table(files.crosswalk, ["area_num_1", "GEOID"], "census.crosswalk")
    crosswalk = crosswalk[["GEOID", "area_num_1"]].astype("int64")
    deduplicated = crosswalk.drop_duplicates()
    conflicting = deduplicated["GEOID"][deduplicated["GEOID"].duplicated()].tolist()
    if conflicting:
        raise ExplainInputError(
            f"census.crosswalk puts tracts {conflicting} in more than one community area; "
            "keep one row per tract"
        )
    log.record(
        "crosswalk: one row per tract",
        len(crosswalk),
        len(deduplicated),
        crosswalk["GEOID"][crosswalk.duplicated()].tolist(),
        "dropped repeated rows",
    )
    tracts = deduplicated.rename(columns={"area_num_1": "community_area"}).set_index("GEOID")
    tracts = _join(tracts, _acs(files), "ACS", log, fill_zero=False)
    tracts = _join(tracts, _land(files), "land area", log, fill_zero=False)
    tracts = _join(tracts, _transit(files), "transit stops", log, fill_zero=True)
    tracts = _join(tracts, _jobs(files), "LEHD jobs", log, fill_zero=True)
    downtown = read_table(files.downtown, ["geoid10"], "census.downtown")["geoid10"]
    outside = sorted(set(downtown.astype("int64")) - set(tracts.index))
    log.record(
        "downtown zone tracts in the crosswalk",
        len(downtown),
        len(downtown) - len(outside),
        outside,
        "not in any community area of the crosswalk: ignored",
    )
    tracts["downtown_tracts"] = tracts.index.isin(downtown.astype("int64")).astype(float)
    return tracts


def _join(left: pd.DataFrame, right: pd.DataFrame, name: str, log: JoinLog, fill_zero: bool):
    missing = left.index.difference(right.index).tolist()
    if missing and not fill_zero:
        raise ExplainInputError(
            f"{len(missing)} crosswalk tracts have no {name} row (e.g. {missing[:5]}); "
            f"use {name} and crosswalk files of the same tract vintage"
        )
    joined = left.join(right, how="left")
    if fill_zero:
        joined[right.columns] = joined[right.columns].fillna(0.0)
    log.record(f"tracts + {name}", len(left), len(joined), missing, "no row means none: set to 0")
    return joined


def _acs(files: CensusFiles) -> pd.DataFrame:
    names = {
        "TOTAL_POP": "population",
        "TOTAL_POP_25P": "pop_25_plus",
        "TOTAL_POP_25P_BACHELORS_HIGHER": "pop_25_plus_ba",
        "TOTAL_HHLDS": "households",
        "HHLDS_0_VEH": "households_zero_vehicle",
        "HHLDS_MEDIAN_INCOME": "median_income",
    }
    acs = read_table(files.acs, ["CENSUS_TRACT", "AGE_20_24", "AGE_25_34", *names], "census.acs")
    out = acs.rename(columns=names).set_index(acs["CENSUS_TRACT"].astype("int64"))
    out["pop_20_34"] = acs["AGE_20_24"].to_numpy() + acs["AGE_25_34"].to_numpy()
    return out[[*names.values(), "pop_20_34"]].astype(float)


def _land(files: CensusFiles) -> pd.DataFrame:
    land = read_table(files.land, ["GEOID", "ALAND", "INTPTLAT", "INTPTLON"], "census.land")
    out = pd.DataFrame(
        {
            "land_km2": land["ALAND"].to_numpy() / 1e6,
            "lat": land["INTPTLAT"].to_numpy(),
            "lon": land["INTPTLON"].to_numpy(),
        },
        index=land["GEOID"].astype("int64"),
    )
    return out


def _transit(files: CensusFiles) -> pd.DataFrame:
    columns = ["GEOID", "TRANSIT_STOPS", "CTA_STOPS", "METRA_STOPS"]
    transit = read_table(files.transit, columns, "census.transit").set_index("GEOID")
    # A CTA stop here is mostly a bus stop; rail (Metra) stations are counted apart.
    return pd.DataFrame(
        {"transit_stops": transit["TRANSIT_STOPS"], "rail_stops": transit["METRA_STOPS"]}
    ).set_axis(transit.index.astype("int64"))


def _jobs(files: CensusFiles) -> pd.DataFrame:
    columns = ["YEAR", "TRACTCE10", "C000", "CE03", "CNS18"]
    jobs = read_table(files.jobs, columns, "census.jobs")
    jobs = jobs[jobs["YEAR"] == files.jobs_year]
    if jobs.empty:
        raise ExplainInputError(f"census.jobs has no rows for jobs_year {files.jobs_year}")
    geoid = (files.county_fips + jobs["TRACTCE10"].astype(str).str.zfill(6)).astype("int64")
    mean = jobs.groupby(geoid)[["C000", "CE03", "CNS18"]].mean()
    return mean.set_axis(["jobs", "jobs_high_wage", "jobs_food_accommodation"], axis=1)


def sum_to_units(tracts: pd.DataFrame, level: Level) -> pd.DataFrame:
    """Counts summed over the tracts of each unit; centroid and income averaged.

    The centroid is the plain mean of tract internal points; median income is the mean of tract
    medians weighted by households (tracts without an income are left out of that mean).
    """
    if level == "tract":
        units = tracts.copy()
        units["n_tracts"] = 1
        units.index.name = "unit"
        return units
    key = tracts["community_area"]
    weighted = tracts["median_income"] * tracts["households"]
    has_income = tracts["households"].where(tracts["median_income"].notna(), 0.0)
    units = tracts[ADDITIVE].groupby(key).sum()
    units["lat"] = tracts["lat"].groupby(key).mean()
    units["lon"] = tracts["lon"].groupby(key).mean()
    units["median_income"] = weighted.groupby(key).sum() / has_income.groupby(key).sum()
    units["n_tracts"] = key.groupby(key).size()
    units["community_area"] = units.index
    units.index.name = "unit"
    return units


def area_features(units: pd.DataFrame) -> pd.DataFrame:
    """Densities per km² of land, shares, and distance to the Loop, one row per unit."""
    land = units["land_km2"].replace(0.0, np.nan)
    features = pd.DataFrame(index=units.index)
    features["pop_density_km2"] = units["population"] / land
    features["job_density_km2"] = units["jobs"] / land
    features["high_wage_job_share"] = _share(units["jobs_high_wage"], units["jobs"])
    features["food_job_density_km2"] = units["jobs_food_accommodation"] / land
    features["transit_stop_density_km2"] = units["transit_stops"] / land
    features["rail_stops"] = units["rail_stops"]
    features["distance_to_loop_km"] = _haversine_km(units["lat"], units["lon"], *LOOP_LAT_LON)
    features["downtown_zone_share"] = units["downtown_tracts"] / units["n_tracts"]
    features["share_young_20_34"] = _share(units["pop_20_34"], units["population"])
    features["share_hh_zero_veh"] = _share(units["households_zero_vehicle"], units["households"])
    features["share_ba_plus"] = _share(units["pop_25_plus_ba"], units["pop_25_plus"])
    features["median_income"] = units["median_income"]
    return features


def _share(part: pd.Series, whole: pd.Series) -> pd.Series:
    return part / whole.replace(0.0, np.nan)


def _haversine_km(lat, lon, lat0: float, lon0: float) -> np.ndarray:
    phi, phi0 = np.radians(lat), np.radians(lat0)
    dphi, dlam = phi - phi0, np.radians(lon - lon0)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi) * np.cos(phi0) * np.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def label_contexts(units: pd.DataFrame, level: Level, rules: ContextRules) -> pd.Series:
    """``airport`` / ``downtown`` / ``neighborhood`` per unit; airport wins over downtown.

    A community area is downtown when any of its tracts is in the Downtown Zone, as in the
    city's definition of downtown trips; a tract is downtown when it is itself in the zone.
    """
    if level == "tract":
        airport = units.index.isin(rules.airport_tracts)
    else:
        airport = units.index.isin(rules.airport_areas)
    downtown = units["downtown_tracts"].to_numpy() > 0
    labels = np.where(airport, "airport", np.where(downtown, "downtown", "neighborhood"))
    return pd.Series(labels, index=units.index, name="context")
