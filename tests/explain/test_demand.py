"""The demand pipeline: table assembly, SHAP additivity, family shares, errors, end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.explain.test_trips import write_csv
from winnow.cli import app
from winnow.common.config import ConfigError, load_config
from winnow.common.data import data_file
from winnow.explain.demand import DemandJobConfig, build_demand_table
from winnow.explain.demand_models import (
    ALL_ROWS,
    _boosting,
    analyse_demand,
    cross_validated_metrics,
    shap_values,
)
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.jobs import run_job

FAST = ["bootstrap=10", "model.n_estimators=40", "grid_points=6", "cv_folds=3"]


def config(*overrides: str) -> DemandJobConfig:
    return load_config(DemandJobConfig, overrides=list(overrides))


@pytest.fixture(scope="module")
def shipped_table():
    return build_demand_table(config())


def test_shipped_table_rows_contexts_and_target(shipped_table):
    table = shipped_table
    assert table.X.shape == (77, 11)
    assert dict(zip(*np.unique(table.contexts, return_counts=True), strict=True)) == {
        "airport": 2,
        "downtown": 4,
        "neighborhood": 71,
    }
    counts = pd.read_csv(data_file("ridesourcing/tnp_trips_per_1000_by_community_area_jan2024.csv"))
    loop_trips = counts.query("pickup_ca == 32 and trip_type == 'rideshare'")["trip_count"].item()
    land = pd.read_csv(data_file("ridesourcing/tract_land_area.csv")).set_index("GEOID")["ALAND"]
    crosswalk = pd.read_csv(data_file("ridesourcing/community_area_to_tract.csv"))
    loop_km2 = land[crosswalk.loc[crosswalk["area_num_1"] == 32, "GEOID"].unique()].sum() / 1e6
    row = np.flatnonzero(table.ids == 32)[0]
    assert table.y[row] == pytest.approx(np.log1p(loop_trips / loop_km2))
    assert [e["rows_after"] for e in table.joins.entries if e["step"].startswith("units")] == [77]
    assert sorted(table.families) == ["built_environment", "socio_demographic"]
    assert table.observed_trips is None  # aggregated counts carry no trip-level means


def test_shap_values_add_up_to_predictions_and_match_lightgbm(shipped_table):
    table = shipped_table
    model = _boosting(config(*FAST), seed=0).fit(table.X, table.y)
    values, expected = shap_values(model, table.X)
    np.testing.assert_allclose(values.sum(axis=1) + expected, model.predict(table.X), atol=1e-6)
    contributions = model.predict(table.X, pred_contrib=True)  # LightGBM's own tree SHAP
    np.testing.assert_allclose(values, contributions[:, :-1], atol=1e-6)


def test_analysis_shares_sum_to_one_with_intervals_around_them(shipped_table):
    settings = config(*FAST)
    analysis = analyse_demand(shipped_table, settings, quiet=True)
    assert set(analysis.pooled) == {ALL_ROWS, "airport", "downtown", "neighborhood"}
    assert set(analysis.own) == {"neighborhood"}  # the only context with >= 30 rows
    for explanation in [*analysis.pooled.values(), *analysis.own.values()]:
        assert sum(explanation.shares.values()) == pytest.approx(1.0)
        boot_totals = sum(explanation.share_boot.values())
        np.testing.assert_allclose(boot_totals, 1.0)
        for family in explanation.shares:
            lower, upper = explanation.share_interval(family, settings.alpha)
            assert 0 <= lower <= upper <= 1
    grid_sizes = [len(g) for g in analysis.grids]
    assert [len(c) for c in analysis.pooled["airport"].pd] == grid_sizes
    assert analysis.pooled["airport"].ale_boot[0].shape == (10, grid_sizes[0])
    pairs = {row["contexts"] for row in analysis.heterogeneity}
    assert pairs == {"airport vs downtown", "airport vs neighborhood", "downtown vs neighborhood"}


def test_cross_validation_covers_pooled_and_large_contexts(shipped_table):
    rows = cross_validated_metrics(shipped_table, config(*FAST))
    assert {(r["scope"], r["model"]) for r in rows} == {
        (scope, model)
        for scope in ("all", "neighborhood")
        for model in ("lightgbm", "random_forest", "ridge")
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["source.trips={paths: [x.csv]}"], "exactly one of source.counts"),
        (
            ["families={a: [pop_density_km2], b: [pop_density_km2]}"],
            "'pop_density_km2' is in families a and b",
        ),
        (["families={a: []}"], "families.a is empty"),
        (
            ["source.counts=null", "source.trips={paths: [x.csv], unit: od}"],
            "target must be 'trips'",
        ),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(*overrides)


def test_unknown_feature_lists_what_is_available():
    with pytest.raises(ExplainInputError, match=r"families.b: \['bus_density'\].*available: .*"):
        build_demand_table(config("families={a: [pop_density_km2], b: [bus_density]}"))
    with pytest.raises(ExplainInputError, match=r"trip attributes need source\.trips"):
        build_demand_table(config("families={a: [pop_density_km2], t: [mean_fare]}"))


def synthetic_trips(path, count: int, seed: int = 0):
    """Portal-format trips (synthetic): pickups over areas in proportion to real January counts,
    longer and dearer trips from areas far from the Loop, all to the Loop (area 32)."""
    rng = np.random.default_rng(seed)
    counts = pd.read_csv(data_file("ridesourcing/tnp_trips_per_1000_by_community_area_jan2024.csv"))
    rideshare = counts[counts["trip_type"] == "rideshare"]
    crosswalk = pd.read_csv(data_file("ridesourcing/community_area_to_tract.csv"))
    first_tract = crosswalk.groupby("area_num_1")["GEOID"].min()
    areas = rng.choice(
        rideshare["pickup_ca"],
        size=count,
        p=rideshare["trip_count"] / rideshare["trip_count"].sum(),
    )
    trips = []
    for area in areas:
        miles = round(float(rng.gamma(2.0, 1.0 + area / 20)), 1)
        start = f"01/{rng.integers(1, 32):02d}/2024 0{rng.integers(1, 10)}:15:00 PM"
        shared = "true" if rng.random() < 0.1 else "false"
        fare = 2.5 * round((3 + 2 * miles) / 2.5)
        trips.append(
            (
                start,
                first_tract[area],
                17031320100,
                str(area),
                "32",
                miles,
                200 * miles,
                fare,
                shared,
            )
        )
    return write_csv(path, trips)


def test_raw_trips_end_to_end_with_trip_attributes(tmp_path, monkeypatch):
    from winnow.explain import plots

    marked = []
    monkeypatch.setattr(plots, "mark_synthetic", marked.append)
    trips = synthetic_trips(tmp_path / "trips.csv", 3000)
    settings = config(
        *FAST,
        "source.counts=null",
        f"source.trips={{paths: ['{trips}'], level: community_area}}",
        "families={built_environment: [pop_density_km2, job_density_km2, distance_to_loop_km],"
        " socio_demographic: [share_hh_zero_veh, median_income],"
        " trip_attributes: [mean_trip_miles, mean_fare, share_shared_authorized]}",
        "placebo.refits=4",
        "synthetic=true",
    )
    report = run_job("demand", settings, root=tmp_path / "runs", quiet=True)
    run = report.parent
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert summary["source"]["rows_read"] == 3000
    for row in summary["family_shares"]:
        total = row["built_environment"] + row["socio_demographic"] + row["trip_attributes"]
        assert total == pytest.approx(1.0)
        assert 0 <= row["trip_attributes_placebo_lower"] <= row["trip_attributes_placebo_upper"]
    plots = sorted(p.name for p in (run / "plots").iterdir())
    assert plots == [
        "demand_ale.png",
        "demand_family_shares.png",
        "demand_map.png",
        "demand_pd.png",
        "demand_placebo_trip_attributes.png",
    ]
    assert len(marked) == len(plots)  # every figure carries the SYNTHETIC title
    text = (run / "report.md").read_text()
    assert text.startswith("# SYNTHETIC DATA: ") and "**SYNTHETIC DATA: the trips" in text
    assert "Importance by feature family" in text and "#### Placebo: trip attributes" in text
    assert "real above placebo" in text


def test_origin_destination_table_has_both_ends_and_contexts_by_either_end(tmp_path):
    trips = synthetic_trips(tmp_path / "trips.csv", 400)
    settings = config(
        "source.counts=null",
        f"source.trips={{paths: ['{trips}'], level: community_area, unit: od}}",
        "target=trips",
    )
    table = build_demand_table(settings)
    assert "origin_pop_density_km2" in table.feature_names
    assert "destination_pop_density_km2" in table.feature_names
    # Every trip ends in the Loop (downtown), so no pair is a neighbourhood trip.
    assert set(table.contexts) <= {"airport", "downtown"}
    assert all(str(i).endswith("-32") for i in table.ids)
    assert table.observed_trips.sum() == 400  # behind the means, for the trip-count placebo


def test_cli_writes_the_report_with_plots(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "demand",
            "--config",
            "configs/explain/chicago.yaml",
            "--out",
            str(tmp_path),
            "--quiet",
            *[item for override in [*FAST, "placebo.refits=3"] for item in ("--set", override)],
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    plots = {path.stem for path in (run / "plots").glob("*.png")}
    assert len(plots) == 6 and "demand_placebo_socio_demographic" in plots
    assert "SYNTHETIC" not in (run / "report.md").read_text()  # the shipped counts are real
    assert (run / "report.html").stat().st_size > 10_000


def test_cli_wrong_trip_file_type_is_one_clear_line(tmp_path):
    bad = tmp_path / "trips.xlsx"
    bad.write_bytes(b"PK")
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "demand",
            "--out",
            str(tmp_path / "runs"),
            "--set",
            "source.counts=null",
            "--set",
            f"source.trips={{paths: ['{bad}']}}",
        ],
    )
    assert result.exit_code == 2
    assert "xlsx" in result.output and "Traceback" not in result.output
