"""The routers of ``route eval``: calibration on validation only, the matched and oracle prices,
pacing state per stream, and which per-query router counts as honouring the limits."""

import dataclasses

import numpy as np
import pytest

from winnow.route.config import RouteEvalConfig
from winnow.route.evaluate import StreamScore
from winnow.route.routers import (
    ORACLE_MATCHED,
    Traffic,
    batch_versus_per_query,
    best_constrained_per_query,
    calibrate,
    replay_stream,
    run_stream,
    score_routers,
)

CONFIG = RouteEvalConfig(batch_size=20, capacity_share=0.5, pacing_steps=[1.0, 4.0])


def traffic(seed: int, n: int = 120) -> Traffic:
    """Three models, quality rising with cost; the truth is a draw from the estimate."""
    rng = np.random.default_rng(seed)
    cost = np.array([0.1, 0.5, 2.0]) * rng.uniform(0.8, 1.2, (n, 3))
    p_hat = np.clip(np.array([0.4, 0.6, 0.8]) + rng.normal(0, 0.15, (n, 3)), 0, 1)
    truth = (rng.uniform(size=(n, 3)) < p_hat).astype(float)
    return Traffic(p_hat, np.full((n, 3), 0.1), truth, cost, np.zeros(n, int), ("a", "b", "c"))


@pytest.fixture(scope="module")
def knobs():
    return calibrate(0.3, traffic(0), traffic(1), CONFIG, robust=False)


def test_matched_price_spends_on_validation_what_the_batch_milp_spends_there(knobs):
    val = traffic(1)
    batch = run_stream("batch", val, "random", knobs, CONFIG).spend_per_query
    matched = run_stream("per-query matched", val, "random", knobs, CONFIG).spend_per_query
    assert matched <= batch * (1 + 1e-9)
    loosened = dataclasses.replace(knobs, lam_matched=knobs.lam_matched * 0.9)
    assert run_stream("per-query matched", val, "random", loosened, CONFIG).spend_per_query > batch


def test_oracle_price_is_set_from_the_batch_spend_on_the_same_test_stream(knobs):
    test = traffic(2)
    scores = score_routers(["per-query", ORACLE_MATCHED, "batch"], test, "random", knobs, CONFIG)
    assert list(scores) == ["per-query", ORACLE_MATCHED, "batch"]
    assert scores[ORACLE_MATCHED].spend_per_query <= scores["batch"].spend_per_query * (1 + 1e-9)
    alone = score_routers([ORACLE_MATCHED], test, "random", knobs, CONFIG)[ORACLE_MATCHED]
    assert alone == scores[ORACLE_MATCHED]  # "batch" runs even when it was not asked for


def test_constrained_routers_honour_the_batch_limits_and_pacing_restarts_each_stream(knobs):
    test = traffic(3)
    for name in ("per-query constrained", "per-query clipped", "batch"):
        score = run_stream(name, test, "adversarial", knobs, CONFIG)
        assert score.batches_over_budget == 0, name
    assert (
        run_stream("per-query constrained", test, "random", knobs, CONFIG).capacity_violations == 0
    )
    first = replay_stream("per-query paced", test, "random", knobs, CONFIG)
    assert replay_stream("per-query paced", test, "random", knobs, CONFIG) == first


def test_best_constrained_ignores_routers_that_broke_a_limit_and_the_oracle_bound():
    def score(accuracy, over=0, capacity=0):
        return StreamScore(accuracy, 1.0, over, 0.0, capacity, 0)

    scores = {
        "batch": score(0.80),
        "per-query": score(0.90, over=3),
        ORACLE_MATCHED: score(0.95),
        "per-query constrained": score(0.78),
        "per-query clipped": score(0.70),
        "per-query paced": score(0.85, capacity=2),
    }
    assert best_constrained_per_query(scores) == "per-query constrained"
    row = batch_versus_per_query(scores)
    assert row["batch - best constrained"] == pytest.approx(0.02)
    assert row[ORACLE_MATCHED] == 0.95 and row["per-query paced capacity violations"] == 2
    assert best_constrained_per_query({"batch": score(0.8), "per-query": score(0.9, 1)}) is None


def test_batch_solves_cut_short_by_their_time_limit_are_counted(knobs, monkeypatch):
    from winnow.route import routers
    from winnow.route.assign import assign_batch

    test = traffic(4)
    assert run_stream("batch", test, "random", knobs, CONFIG).solves_time_limited == 0

    def hurried(*args, **options):  # asks for the optimum with no time to prove it
        return assign_batch(*args, **{**options, "time_limit": 1e-9, "mip_rel_gap": 0.0})

    monkeypatch.setattr(routers, "assign_batch", hurried)
    score = run_stream("batch", test, "random", knobs, CONFIG)
    batches = len(test.cost) // CONFIG.batch_size
    assert 0 < score.solves_time_limited <= batches
    assert score.batches_over_budget == 0 and score.capacity_violations == 0  # still feasible
