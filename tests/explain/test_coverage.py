"""Tests of the coverage harness: scoring by hand, the tree-prefix forest, a tiny simulation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from winnow.explain.coverage import (
    KNOWN_FUNCTIONS,
    CoverageJobConfig,
    coverage_interval,
    coverage_table,
    run_coverage,
    score_intervals,
)
from winnow.explain.vforest import VForestRegressor


def test_score_intervals_by_hand():
    # two replicates, two points: target = column means (1, 0); |deviation| = 1 everywhere
    means = np.array([[0.0, 1.0], [2.0, -1.0]])
    variances = np.array([[1.0, 0.01], [0.25, 4.0]])
    scored = score_intervals(means, variances, z=1.0)
    # covered where sqrt(variance) >= 1: (0, 0) and (1, 1)
    assert scored["coverage"] == 0.5
    np.testing.assert_allclose(scored["coverage_per_point"], [0.5, 0.5])
    # truth = var over replicates (ddof=1) = 2 at both points
    np.testing.assert_allclose(scored["ratio_per_point"], [0.3125, 1.0025])
    low, high = scored["coverage_ci"]
    assert 0 <= low <= 0.5 <= high <= 1


def test_coverage_interval_shrinks_with_more_replicates():
    rng = np.random.default_rng(0)
    widths = []
    for replicates in (20, 500):
        hits = rng.random((replicates, 10)) < 0.9
        low, high = coverage_interval(hits, lambda rows, hits=hits: hits[rows])
        assert low < hits.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # ~ 1 / sqrt(R)


def test_config_names_the_unknown_function_and_variant():
    with pytest.raises(ValidationError, match="unknown functions \\['sinc'\\]"):
        CoverageJobConfig(functions=["sinc"])
    with pytest.raises(ValidationError, match="grouped"):
        CoverageJobConfig(variants=["internal"])
    with pytest.raises(ValidationError, match="test_points"):
        CoverageJobConfig(test_points=10)


def test_known_functions_have_their_stated_inputs():
    rng = np.random.default_rng(0)
    for features, function in KNOWN_FUNCTIONS.values():
        X = rng.uniform(size=(50, features))
        values = function(X)
        assert values.shape == (50,) and np.all(np.isfinite(values)) and values.std() > 0.5


def test_tiny_simulation_rows_and_table():
    config = CoverageJobConfig(
        functions=["steps"],
        subsample_sizes=[20],
        tree_counts=[20, 40],
        replicates=10,
        peers=False,
    )
    rows = run_coverage(config, quiet=True)
    assert [(r["n_trees"], r["variant"]) for r in rows] == [
        (20, "ij_v"),
        (20, "ij_v_calibrated"),
        (40, "ij_v"),
        (40, "ij_v_calibrated"),
    ]
    for row in rows:
        assert 0 <= row["coverage_ci"][0] <= row["coverage"] <= row["coverage_ci"][1] <= 1
        assert row["ratio"] > 0
    table = coverage_table(rows)
    assert table["steps"]["500"]["20"]["40"]["ij_v"] == rows[2]["coverage"]
    # deterministic: the same seed gives the same rows
    again = run_coverage(config, quiet=True)
    assert [r["coverage"] for r in again] == [r["coverage"] for r in rows]


def test_a_tree_prefix_is_the_forest_of_those_trees():
    from winnow.explain.coverage import _first_trees

    rng = np.random.default_rng(1)
    X = rng.uniform(size=(80, 5))
    forest = VForestRegressor(n_estimators=30, subsample_size=10, random_state=0).fit(
        X, KNOWN_FUNCTIONS["steps"][1](X)
    )
    head = _first_trees(forest, 12)
    expected = np.mean(
        [tree.predict(X[:5].astype(np.float32)) for tree in forest.estimators_[:12]], 0
    )
    np.testing.assert_allclose(head.predict(X[:5]), expected)
    assert head.inbag_.shape == (12, 80) and len(forest.estimators_) == 30
