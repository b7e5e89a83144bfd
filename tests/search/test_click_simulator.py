"""The SIMULATED click model: IPS recovers attractiveness, attractiveness is a function of the
text (features against closed forms and their directions), seeding, perturbation, labelling."""

import numpy as np
import pytest
from pydantic import ValidationError

from winnow.search.click_simulator import (
    DEFAULT_TEXT_WEIGHTS,
    SIMULATED_SOURCE,
    TEXT_FEATURES,
    ClickModel,
    simulate_clicks,
    text_features,
)
from winnow.search.clicks import ips_ctr
from winnow.search.config import ClicksConfig
from winnow.search.exceptions import SearchInputError

RANKED = np.array([[f"d{i}" for i in range(10)], [f"d{i}" for i in range(5, 15)]])
QRELS = {"q1": {"d0": 3, "d1": 2, "d4": 1, "d7": 3}, "q2": {"d5": 3, "d9": 2}}
QUERIES = {"q1": "how hot is a volcano", "q2": "price of gold"}
FILLER = "and the rest of the passage goes on about other things for a while"
DOCS = {
    "d0": "Volcano Heat Explained. Lava from a volcano reaches 1200 degrees.",
    "d1": f"lava is hot, {FILLER} {FILLER} {FILLER}",
    "d2": "Gold Price Today: 1900 dollars per ounce in 2023.",
    "d3": f"some notes on a trip {FILLER}",
    "d4": "A volcano is a vent in the crust of a planet.",
    "d5": f"the price of gold changes daily {FILLER} {FILLER}",
    "d6": "Cooking Pasta. Boil water for 10 minutes.",
    "d7": f"inside a volcano magma is very hot {FILLER}",
    "d8": "Stock Markets.",
    "d9": f"gold {FILLER} {FILLER} {FILLER} {FILLER}",
    "d10": "Price of Gold in 1980 and 2020",
    "d11": f"{FILLER} {FILLER} and finally gold",
    "d12": "the weather was fine",
    "d13": "Ten Facts About Gold.",
    "d14": f"{FILLER} 3 4 5",
}
TEXTS = {"query_texts": QUERIES, "doc_texts": DOCS}

# One (low, high) passage pair per feature, equal in every other feature, for QUERY.
QUERY = "cheap flights to paris"
BODY = "book early and compare fares on a weekday"
PAIRS = {
    "headline": (f"cheap flights to paris. {BODY}", f"Cheap Flights To Paris. {BODY}"),
    "brevity": (
        f"cheap flights to paris. {BODY} {FILLER} {FILLER}",
        f"cheap flights to paris. {BODY}",
    ),
    "query_terms_early": (
        f"{BODY} {FILLER} cheap flights paris",
        f"cheap flights paris {BODY} {FILLER}",
    ),
    "numbers": (
        f"cheap flights to paris. {BODY} from may",
        f"cheap flights to paris. {BODY} 1 may 2024",
    ),
}


def test_text_features_closed_forms():
    columns = list(TEXT_FEATURES)
    [row] = text_features("what causes gold prices", ["Definition of Environment. Environment: x"])
    assert row[columns.index("headline")] == pytest.approx(2 / 3)  # 2 of 3 words capitalised
    fifty = " ".join(["word"] * 50)
    assert text_features("q", [fifty])[0, columns.index("brevity")] == pytest.approx(0.5)
    early = text_features(
        "what causes gold prices", [f"gold prices {FILLER}", f"{FILLER} {FILLER} gold"]
    )
    np.testing.assert_allclose(early[:, columns.index("query_terms_early")], [2 / 3, 0.0])
    digits = text_features("q", ["in 1999 and 2001", "a 1 b 2 c 3 d 4", "none"])
    np.testing.assert_allclose(digits[:, columns.index("numbers")], [2 / 3, 1.0, 0.0])
    assert text_features("q", []).shape == (0, len(TEXT_FEATURES))


@pytest.mark.parametrize("name", list(TEXT_FEATURES))
def test_each_feature_moves_attractiveness_in_its_direction(name):
    column = list(TEXT_FEATURES).index(name)
    features = text_features(QUERY, PAIRS[name])
    others = [c for c in range(len(TEXT_FEATURES)) if c != column]
    assert features[1, column] > features[0, column]
    np.testing.assert_allclose(features[1, others], features[0, others], atol=0.05)
    for weight in (1.0, -1.0):
        model = ClickModel(text_weights={name: weight}, noise_scale=0)
        low, high = model.attractiveness([1, 1], ["a", "b"], QUERY, PAIRS[name])
        assert (high - low) * weight > 0
    low, high = ClickModel(noise_scale=0).attractiveness([1, 1], ["a", "b"], QUERY, PAIRS[name])
    assert high > low  # every default weight is positive


def test_attractiveness_is_a_function_of_the_text_not_the_document_id():
    model = ClickModel(noise_scale=0)
    texts = [DOCS["d0"], DOCS["d1"], DOCS["d0"]]
    first = model.attractiveness([2, 2, 2], ["d0", "d1", "other"], "volcano", texts)
    again = model.attractiveness([2, 2, 2], ["x", "y", "z"], "volcano", texts)
    np.testing.assert_array_equal(first, again)
    assert first[0] == first[2] and first[0] != first[1]
    noisy = ClickModel(noise_scale=1.0).attractiveness(
        [2, 2], ["d0", "other"], "volcano", texts[::2]
    )
    assert noisy[0] != noisy[1]  # the optional per-document noise is the only id-dependent part


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ips_ctr_converges_to_true_attractiveness(eta):
    model = ClickModel(eta=eta, sessions=40_000, seed=3)
    sim = simulate_clicks(["q1", "q2"], RANKED, QRELS, model, **TEXTS)
    debiased, raw = ips_ctr(sim.log, eta=eta), sim.log.ctr()
    ips_errors, raw_errors = [], []
    for qid, docs in sim.attractiveness.items():
        for doc, truth in docs.items():
            ips_errors.append(abs(debiased[qid][doc] - truth))
            raw_errors.append(abs(raw[qid][doc] - truth))
    assert max(ips_errors) < 0.02
    assert max(raw_errors) > 0.1  # raw CTR mixes in position bias


def test_simulated_ctr_follows_the_text_features():
    """Without position bias (eta=0) every session examines every rank, so a pair's clicks are
    Binomial(sessions, attractiveness): each feature's CTR gap must match the true gap within 4
    standard errors, and the true gap exceed 4 standard errors (so its sign is observed)."""
    sessions = 20_000
    names = list(PAIRS)
    ids = [f"{name}_{side}" for name in names for side in ("low", "high")]
    doc_texts = {
        f"{name}_{side}": PAIRS[name][i] for name in names for i, side in enumerate(("low", "high"))
    }
    model = ClickModel(eta=0.0, noise_scale=0, sessions=sessions, perturbation="none", seed=5)
    qrels = {"q": dict.fromkeys(ids, 2)}
    sim = simulate_clicks(
        ["q"], np.array([ids]), qrels, model, query_texts={"q": QUERY}, doc_texts=doc_texts
    )
    ctr, truth = sim.log.ctr()["q"], sim.attractiveness["q"]
    for name in names:
        low, high = truth[f"{name}_low"], truth[f"{name}_high"]
        standard_error = np.sqrt((low * (1 - low) + high * (1 - high)) / sessions)
        gap = ctr[f"{name}_high"] - ctr[f"{name}_low"]
        assert high - low > 4 * standard_error, name
        assert abs(gap - (high - low)) < 4 * standard_error, name


def test_simulation_is_deterministic_and_per_query():
    model = ClickModel(sessions=300, seed=7)
    first = simulate_clicks(["q1", "q2"], RANKED, QRELS, model, **TEXTS)
    again = simulate_clicks(["q1", "q2"], RANKED, QRELS, model, **TEXTS)
    assert first.log.to_records() == again.log.to_records()
    alone = simulate_clicks(["q2"], RANKED[1:], QRELS, model, **TEXTS)
    rows = [row for row in first.log.to_records() if row["query_id"] == "q2"]
    assert rows == alone.log.to_records()
    other = simulate_clicks(["q1", "q2"], RANKED, QRELS, ClickModel(sessions=300, seed=8), **TEXTS)
    assert other.log.to_records() != first.log.to_records()


def test_attractiveness_is_not_relevance():
    sim = simulate_clicks(["q1"], RANKED[:1], QRELS, ClickModel(sessions=1, noise_scale=0), **TEXTS)
    truth, grades = sim.attractiveness["q1"], QRELS["q1"]
    pairs = [(grades.get(d, 0), a) for d, a in truth.items()]
    assert any(g1 < g2 and a1 > a2 for g1, a1 in pairs for g2, a2 in pairs)
    blind = ClickModel(sessions=1, text_weights={}, noise_scale=0)
    flat = simulate_clicks(["q1"], RANKED[:1], QRELS, blind)  # no text needed when unweighted
    base = ClickModel().grade_attractiveness
    assert flat.attractiveness["q1"] == pytest.approx(
        {d: base[grades.get(d, 0)] for d in RANKED[0]}
    )


def test_perturbation_shows_documents_at_varied_positions():
    for name, spread in (("none", 1), ("swap", 2), ("shuffle", 10)):
        sim = simulate_clicks(
            ["q1"], RANKED[:1], QRELS, ClickModel(sessions=500, perturbation=name), **TEXTS
        )
        positions = {row["position"] for row in sim.log.to_records() if row["doc_id"] == "d5"}
        assert len(positions) >= spread
    assert sim.log.impressions.sum() == 500 * 10


def test_simulated_label_everywhere():
    sim = simulate_clicks(["q1"], RANKED[:1], QRELS, ClickModel(sessions=10), **TEXTS)
    assert sim.log.simulated and sim.log.source == SIMULATED_SOURCE
    assert "SIMULATED" in sim.log.source and sim.summary()["label"] == "SIMULATED clicks"
    assert sim.summary()["simulated"] is True
    assert sim.summary()["click_model"]["text_weights"] == ClickModel().text_weights
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
    with pytest.raises(SearchInputError, match="text_weights must map names of"):
        ClickModel(text_weights={"clickbait": 1.0})
    with pytest.raises(SearchInputError, match="noise_scale must be"):
        ClickModel(noise_scale=-0.1)
    with pytest.raises(SearchInputError, match="ranked_ids must be"):
        simulate_clicks(["q1"], RANKED, QRELS, **TEXTS)
    with pytest.raises(SearchInputError, match=r"needs query_texts.*'d3'"):
        simulate_clicks(["q1"], RANKED[:1], QRELS, query_texts=QUERIES, doc_texts={"d0": "x"})


def test_clicks_config_defaults_are_the_click_models():
    config = ClicksConfig()
    model = ClickModel()
    assert config.text_weights == model.text_weights == DEFAULT_TEXT_WEIGHTS
    assert (config.noise_scale, config.sessions, config.eta) == (
        model.noise_scale,
        model.sessions,
        model.eta,
    )
    with pytest.raises(ValidationError, match="unknown features"):
        ClicksConfig(text_weights={"clickbait": 1.0})
