"""The placebo check: a family's share after shuffling it across units, on seeded tables."""

import numpy as np
import pytest

from winnow.common.config import ConfigError, load_config
from winnow.explain.areas import JoinLog
from winnow.explain.demand import DemandJobConfig, DemandTable
from winnow.explain.demand_models import ALL_ROWS, analyse_demand

FAST = ["bootstrap=10", "model.n_estimators=40", "grid_points=5", "cv_folds=3", "curves=2"]
FAMILIES = "families={signal: [s1, s2], noise: [n1, n2]}"


def table_with_noise_family(rows: int = 240, seed: int = 0) -> DemandTable:
    """y depends on s1, s2 only; n1, n2 are drawn independently of it (SYNTHETIC)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    y = np.sin(2 * X[:, 0]) + X[:, 1] + 0.3 * rng.normal(size=rows)
    contexts = np.where(np.arange(rows) < 40, "downtown", "neighborhood")
    return DemandTable(
        X=X,
        y=y,
        feature_names=("s1", "s2", "n1", "n2"),
        families={"signal": [0, 1], "noise": [2, 3]},
        contexts=contexts,
        ids=np.arange(rows),
        lat=np.zeros(rows),
        lon=np.zeros(rows),
        target_name="y",
        level="tract",
        unit="pickups",
        joins=JoinLog(),
    )


@pytest.fixture(scope="module")
def analysis():
    settings = load_config(
        DemandJobConfig,
        overrides=[*FAST, FAMILIES, "placebo={families: [signal, noise], refits: 12}"],
    )
    return analyse_demand(table_with_noise_family(), settings, quiet=True), settings


def test_a_shuffled_signal_falls_far_below_its_real_share(analysis):
    found, settings = analysis
    for explanation in [*found.pooled.values(), *found.own.values()]:
        real_lower, _ = explanation.share_interval("signal", settings.alpha)
        _, placebo_upper = explanation.placebo_interval("signal", settings.alpha)
        assert explanation.placebo["signal"].shape == (12,)
        # Shuffled, the signal is noise like the other family: about half of what is left.
        assert placebo_upper < 0.7 < 0.8 < real_lower
        assert explanation.placebo_p_value("signal") == pytest.approx(1 / 13)


def test_a_family_independent_of_the_target_is_not_above_its_placebo(analysis):
    found, settings = analysis
    for explanation in (found.pooled[ALL_ROWS], found.own["neighborhood"]):
        placebo_lower, placebo_upper = explanation.placebo_interval("noise", settings.alpha)
        assert 0 < placebo_lower < placebo_upper < 0.1  # noise gets almost nothing, shuffled
        # Unshuffled it is one more draw of the same null: inside the placebo's range.
        assert explanation.shares["noise"] <= placebo_upper
        assert explanation.placebo_p_value("noise") > 0.05


def test_placebo_defaults_to_trip_attributes_and_checks_names():
    default = load_config(DemandJobConfig)
    assert default.placebo_families == []  # the shipped counts have no trip attributes
    trips = load_config(DemandJobConfig, overrides=["families.trip_attributes=[mean_fare]"])
    assert trips.placebo_families == ["trip_attributes"]
    off = load_config(
        DemandJobConfig, overrides=["families.trip_attributes=[mean_fare]", "placebo.refits=0"]
    )
    assert off.placebo_families == []
    with pytest.raises(ConfigError, match=r"'trip_count' needs source\.trips"):
        load_config(DemandJobConfig, overrides=["placebo.strata=trip_count"])
    with pytest.raises(ConfigError, match=r"placebo.families \['nosuch'\] are not in families"):
        load_config(DemandJobConfig, overrides=["placebo.families=[nosuch]"])
