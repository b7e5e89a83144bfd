"""The SIMULATED click model: IPS recovers attractiveness, seeding, perturbation, labelling."""

import numpy as np
import pytest

from winnow.search.click_simulator import SIMULATED_SOURCE, ClickModel, simulate_clicks
from winnow.search.clicks import ips_ctr
from winnow.search.exceptions import SearchInputError

RANKED = np.array([[f"d{i}" for i in range(10)], [f"d{i}" for i in range(5, 15)]])
QRELS = {"q1": {"d0": 3, "d1": 2, "d4": 1, "d7": 3}, "q2": {"d5": 3, "d9": 2}}


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ips_ctr_converges_to_true_attractiveness(eta):
    model = ClickModel(eta=eta, sessions=40_000, seed=3)
    sim = simulate_clicks(["q1", "q2"], RANKED, QRELS, model)
    debiased, raw = ips_ctr(sim.log, eta=eta), sim.log.ctr()
    ips_errors, raw_errors = [], []
    for qid, docs in sim.attractiveness.items():
        for doc, truth in docs.items():
            ips_errors.append(abs(debiased[qid][doc] - truth))
            raw_errors.append(abs(raw[qid][doc] - truth))
    assert max(ips_errors) < 0.02
    assert max(raw_errors) > 0.1  # raw CTR mixes in position bias


def test_simulation_is_deterministic_and_per_query():
    model = ClickModel(sessions=300, seed=7)
    first = simulate_clicks(["q1", "q2"], RANKED, QRELS, model)
    again = simulate_clicks(["q1", "q2"], RANKED, QRELS, model)
    assert first.log.to_records() == again.log.to_records()
    alone = simulate_clicks(["q2"], RANKED[1:], QRELS, model)
    rows = [row for row in first.log.to_records() if row["query_id"] == "q2"]
    assert rows == alone.log.to_records()
    other = simulate_clicks(["q1", "q2"], RANKED, QRELS, ClickModel(sessions=300, seed=8))
    assert other.log.to_records() != first.log.to_records()


def test_attractiveness_is_not_relevance():
    sim = simulate_clicks(["q1"], RANKED[:1], QRELS, ClickModel(sessions=1, clickbait_scale=1.5))
    truth, grades = sim.attractiveness["q1"], QRELS["q1"]
    pairs = [(grades.get(d, 0), a) for d, a in truth.items()]
    assert any(g1 < g2 and a1 > a2 for g1, a1 in pairs for g2, a2 in pairs)
    flat = simulate_clicks(["q1"], RANKED[:1], QRELS, ClickModel(sessions=1, clickbait_scale=0))
    base = ClickModel().grade_attractiveness
    assert flat.attractiveness["q1"] == pytest.approx(
        {d: base[grades.get(d, 0)] for d in RANKED[0]}
    )


def test_perturbation_shows_documents_at_varied_positions():
    for name, spread in (("none", 1), ("swap", 2), ("shuffle", 10)):
        sim = simulate_clicks(
            ["q1"], RANKED[:1], QRELS, ClickModel(sessions=500, perturbation=name)
        )
        positions = {row["position"] for row in sim.log.to_records() if row["doc_id"] == "d5"}
        assert len(positions) >= spread
    assert sim.log.impressions.sum() == 500 * 10


def test_simulated_label_everywhere():
    sim = simulate_clicks(["q1"], RANKED[:1], QRELS, ClickModel(sessions=10))
    assert sim.log.simulated and sim.log.source == SIMULATED_SOURCE
    assert "SIMULATED" in sim.log.source and sim.summary()["label"] == "SIMULATED clicks"
    assert sim.summary()["simulated"] is True
    assert all(row["simulated"] is True for row in sim.log.to_records())
    assert "SIMULATED" in simulate_clicks.__doc__ and "SIMULATED" in ClickModel.__doc__
    assert set(sim.attractiveness_qrels()["q1"].values()) <= set(range(101))


def test_click_model_validation():
    with pytest.raises(SearchInputError, match="perturbation must be one of"):
        ClickModel(perturbation="rotate")
    with pytest.raises(SearchInputError, match="grade_attractiveness"):
        ClickModel(grade_attractiveness=(0.0, 0.5))
    with pytest.raises(SearchInputError, match="eta must be"):
        ClickModel(eta=-1)
    with pytest.raises(SearchInputError, match="ranked_ids must be"):
        simulate_clicks(["q1"], RANKED, QRELS)
