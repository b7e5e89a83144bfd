"""Census covariates on the shipped Chicago files: joins without silent loss, sums, contexts."""

import numpy as np
import pandas as pd
import pytest

from winnow.common.data import data_file
from winnow.common.exceptions import InputFileError
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

REPEATED_TRACT = 17031081403  # listed twice for area 8 in the shipped crosswalk


@pytest.fixture(scope="module")
def tracts_and_log():
    log = JoinLog()
    return load_tracts(CensusFiles(), log), log


@pytest.fixture(scope="module")
def areas(tracts_and_log):
    return sum_to_units(tracts_and_log[0], "community_area")


def test_every_join_keeps_its_rows_and_logs_what_had_no_match(tracts_and_log):
    tracts, log = tracts_and_log
    steps = {entry["step"]: entry for entry in log.entries}
    assert steps["crosswalk: one row per tract"]["rows_before"] == 801
    assert steps["crosswalk: one row per tract"]["unmatched_keys"] == str(REPEATED_TRACT)
    for name in ("ACS", "land area", "transit stops", "LEHD jobs"):
        entry = steps[f"tracts + {name}"]
        assert entry["rows_before"] == entry["rows_after"] == len(tracts) == 800
    assert steps["tracts + transit stops"]["unmatched"] == 4
    assert steps["tracts + LEHD jobs"]["unmatched"] == 3
    assert tracts.loc[17031090100, "transit_stops"] == 0.0  # no GTFS row: no stops
    assert steps["downtown zone tracts in the crosswalk"]["unmatched"] == 1


def test_area_sums_reproduce_the_shipped_area_table(areas):
    """The shipped table was summed with the repeated crosswalk row, so area 8 differs by it."""
    shipped = pd.read_csv(data_file("ridesourcing/community_area_features.csv"))
    shipped = shipped.set_index("community_area")
    pairs = {
        "population": "pop_acs2019",
        "households": "households",
        "households_zero_vehicle": "hh_zero_veh",
        "pop_25_plus_ba": "pop25_ba_plus",
        "jobs": "jobs_2019",
        "transit_stops": "transit_stops",
        "n_tracts": "n_tracts",
        "lat": "lat",
        "lon": "lon",
    }
    others = shipped.index != 8
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(
            areas.loc[shipped.index[others], ours], shipped.loc[others, theirs], rtol=1e-4
        )
    acs = pd.read_csv(data_file("ridesourcing/tract_acs2019.csv"))
    repeated = acs.loc[acs["CENSUS_TRACT"] == REPEATED_TRACT, "TOTAL_POP"].item()
    assert areas.loc[8, "population"] == shipped.loc[8, "pop_acs2019"] - repeated
    assert areas.loc[8, "n_tracts"] == shipped.loc[8, "n_tracts"] - 1


def test_features_are_densities_and_shares(areas):
    features = area_features(areas)
    loop = features.loc[32]
    assert loop["pop_density_km2"] == pytest.approx(
        areas.loc[32, "population"] / areas.loc[32, "land_km2"]
    )
    assert 0 <= features["share_hh_zero_veh"].min() <= features["share_hh_zero_veh"].max() <= 1
    # The Loop's centroid is about 1 km from State and Madison; O'Hare's about 25 km.
    assert loop["distance_to_loop_km"] < 2
    assert 20 < features.loc[76, "distance_to_loop_km"] < 30


def test_contexts_of_areas_and_tracts(tracts_and_log, areas):
    rules = ContextRules()
    labels = label_contexts(areas, "community_area", rules)
    assert sorted(labels.index[labels == "airport"]) == [56, 76]
    assert sorted(labels.index[labels == "downtown"]) == [8, 24, 28, 32]
    assert (labels == "neighborhood").sum() == 71
    tract_units = sum_to_units(tracts_and_log[0], "tract")
    tract_labels = label_contexts(tract_units, "tract", rules)
    assert sorted(tract_labels.index[tract_labels == "airport"]) == [17031980000, 17031980100]
    assert (tract_labels == "downtown").sum() == 32


def test_missing_acs_tract_is_an_error_naming_the_fix(tmp_path):
    acs = pd.read_csv(data_file("ridesourcing/tract_acs2019.csv"))
    acs[acs["CENSUS_TRACT"] != 17031320100].to_csv(tmp_path / "acs.csv", index=False)
    with pytest.raises(ExplainInputError, match=r"no ACS row.*same tract vintage"):
        load_tracts(CensusFiles(acs=str(tmp_path / "acs.csv")), JoinLog())


def test_tract_in_two_areas_is_an_error(tmp_path):
    crosswalk = pd.DataFrame({"area_num_1": [1, 2], "GEOID": [17031010100, 17031010100]})
    crosswalk.to_csv(tmp_path / "cw.csv", index=False)
    with pytest.raises(ExplainInputError, match="more than one community area"):
        load_tracts(CensusFiles(crosswalk=str(tmp_path / "cw.csv")), JoinLog())


def test_read_table_names_missing_columns_and_wrong_types(tmp_path):
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputFileError, match=r"census.land: columns \['GEOID'\].*it has: a"):
        read_table(str(tmp_path / "t.csv"), ["GEOID"], "census.land")
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(InputFileError, match=r"\.xlsx file; give a \.csv or \.parquet"):
        read_table(str(tmp_path / "t.xlsx"), ["GEOID"], "census.land")
