"""Tests of winnow.route.datasets: the shipped loaders, the table convention, query splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winnow.common.exceptions import InputFileError
from winnow.route import datasets
from winnow.route.datasets import (
    RoutingData,
    load_routellm,
    load_routerbench,
    load_routing_table,
    shared_prefixes,
    split_indices,
    split_queries,
    strip_prefixes,
)
from winnow.route.exceptions import RouteInputError

MODELS = ("model-a", "vendor/model-b")


@pytest.fixture(scope="module")
def routerbench():
    return {split: load_routerbench(split) for split in ("train", "test")}


def toy_frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "sample_id": [f"q{i}" for i in range(n)],
            "eval_name": ["alpha", "beta"] * (n // 2),
            "prompt": [f"question number {i}" for i in range(n)],
        }
    )
    for model in MODELS:
        frame[model] = rng.integers(0, 2, n).astype(float)
        frame[f"{model}|total_cost"] = rng.uniform(1e-4, 1e-3, n)
    return frame


def toy_data(ids) -> RoutingData:
    n = len(ids)
    return RoutingData(
        prompts=[f"p{i}" for i in range(n)],
        quality=np.zeros((n, 2)),
        cost=None,
        models=MODELS,
        tasks=["t"] * n,
        ids=ids,
    )


# -- shipped data -----------------------------------------------------------------------------


def test_public_names():
    for name in datasets.__all__:
        assert hasattr(datasets, name)


@pytest.mark.parametrize(("split", "n_rows", "n_dropped"), [("train", 1338, 20), ("test", 573, 8)])
def test_routerbench_loads_11_models_and_drops_nan_rows(routerbench, split, n_rows, n_dropped):
    data = routerbench[split]
    assert data.n_models == 11 and len(data.models) == 11
    assert "gpt-4-1106-preview" in data.models
    assert data.n_dropped == n_dropped
    assert data.n_queries == n_rows - n_dropped
    assert data.quality.shape == data.cost.shape == (data.n_queries, 11)
    assert len(data.prompts) == len(data.tasks) == len(data.ids) == data.n_queries
    assert set(np.unique(data.quality)) == {0.0, 1.0}
    assert np.all(data.cost > 0)
    assert set(data.tasks) == {"arc-challenge", "mbpp"}
    # the prompt literal is parsed: no list brackets or quotes are left around the text
    assert not any(prompt.startswith("['") for prompt in data.prompts)


def test_routerbench_accuracy_matches_readme(routerbench):
    data = routerbench["test"]
    gpt4 = data.models.index("gpt-4-1106-preview")
    arc, mbpp = data.tasks == "arc-challenge", data.tasks == "mbpp"
    assert data.quality[arc, gpt4].mean() == pytest.approx(0.957, abs=0.001)
    assert data.quality[mbpp, gpt4].mean() == pytest.approx(0.688, abs=0.001)


def test_routerbench_one_task_and_bad_arguments():
    mbpp = load_routerbench("test", tasks=("mbpp",))
    assert mbpp.n_queries == 128 and mbpp.n_dropped == 0
    with pytest.raises(RouteInputError, match="split must be one of"):
        load_routerbench("validation")
    with pytest.raises(RouteInputError, match="tasks must be a non-empty subset"):
        load_routerbench("train", tasks=("gsm8k",))


def test_routellm_gsm8k_has_two_models_and_no_cost():
    data = load_routellm("gsm8k")
    assert data.quality.shape == (1319, 2)
    assert data.cost is None
    assert "gpt-4-1106-preview" in data.models
    assert data.quality[:, data.models.index("gpt-4-1106-preview")].mean() == pytest.approx(
        0.857, abs=0.001
    )
    assert len(set(data.ids)) == data.n_queries


def test_routellm_mmlu_subjects_and_constant_costs():
    prices = {"gpt-4-1106-preview": 0.01, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.0006}
    data = load_routellm("mmlu", cost_per_query=prices)
    assert data.quality.shape == (14042, 2)
    assert len(set(data.tasks)) == 57 and "abstract_algebra" in set(data.tasks)
    assert np.all(data.cost[:, data.models.index("gpt-4-1106-preview")] == 0.01)
    with pytest.raises(RouteInputError, match=r"missing \['mistralai/Mixtral-8x7B"):
        load_routellm("gsm8k", cost_per_query={"gpt-4-1106-preview": 0.01})
    with pytest.raises(RouteInputError, match="benchmark must be one of"):
        load_routellm("hellaswag")


# -- the column convention --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_routing_table_round_trip(tmp_path, suffix):
    frame = toy_frame()
    path = tmp_path / f"table.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    data = load_routing_table(path)
    assert data.models == MODELS
    np.testing.assert_array_equal(data.quality, frame[list(MODELS)].to_numpy())
    np.testing.assert_allclose(data.cost, frame[[f"{m}|total_cost" for m in MODELS]].to_numpy())
    assert data.prompts == frame["prompt"].tolist()
    assert list(data.tasks) == frame["eval_name"].tolist()
    assert list(data.ids) == frame["sample_id"].tolist()
    assert data.n_dropped == 0


def test_routing_table_drops_and_counts_missing_rows(tmp_path):
    frame = toy_frame()
    frame.loc[1, "model-a"] = np.nan
    frame.loc[4, "vendor/model-b|total_cost"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_routing_table(tmp_path / "t.csv")
    assert data.n_dropped == 2
    assert list(data.ids) == ["q0", "q2", "q3", "q5"]


def test_routing_table_parses_prompt_lists_and_generates_ids(tmp_path):
    frame = toy_frame(2).drop(columns=["sample_id", "eval_name"])
    frame["prompt"] = ["['first part', 'second part']", "[not a literal"]
    frame.to_parquet(tmp_path / "t.parquet")
    data = load_routing_table(tmp_path / "t.parquet")
    assert data.prompts == ["first part\nsecond part", "[not a literal"]
    assert len(set(data.ids)) == 2
    assert len(set(data.tasks)) == 1


def test_routing_table_without_costs_needs_models(tmp_path):
    frame = toy_frame().drop(columns=[f"{m}|total_cost" for m in MODELS])
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(RouteInputError, match=r"no '<model>\|total_cost' columns.*models=\["):
        load_routing_table(tmp_path / "t.csv")
    data = load_routing_table(tmp_path / "t.csv", models=["model-a"])
    assert data.models == ("model-a",) and data.cost is None


def test_routing_table_names_missing_columns(tmp_path):
    frame = toy_frame()
    frame.drop(columns=["vendor/model-b|total_cost"]).to_csv(tmp_path / "cost.csv", index=False)
    with pytest.raises(RouteInputError, match=r"cost columns missing.*vendor/model-b\|total_cost"):
        load_routing_table(tmp_path / "cost.csv", models=MODELS)
    frame.drop(columns=["prompt"]).to_csv(tmp_path / "prompt.csv", index=False)
    with pytest.raises(RouteInputError, match="no 'prompt' column; the routing table convention"):
        load_routing_table(tmp_path / "prompt.csv")
    frame.drop(columns=["model-a"]).to_csv(tmp_path / "model.csv", index=False)
    with pytest.raises(RouteInputError, match=r"correctness columns missing for models \['model-a"):
        load_routing_table(tmp_path / "model.csv")


def test_routing_table_rejects_bad_values_and_formats(tmp_path):
    frame = toy_frame()
    frame.loc[0, "model-a"] = 2.0
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(RouteInputError, match=r"\['model-a'\] hold values outside \[0, 1\]"):
        load_routing_table(tmp_path / "t.csv")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(InputFileError, match=r"\.json file; give a \.csv or \.parquet"):
        load_routing_table(tmp_path / "t.json")


def test_routing_table_accepts_a_data_set_spec():
    data = load_routing_table("routing/routerbench_subset/mbpp_test.csv")
    assert data.quality.shape == (128, 11) and data.cost.shape == (128, 11)


def test_routing_data_validates_shapes():
    with pytest.raises(RouteInputError, match=r"quality has shape \(2, 3\), expected"):
        RoutingData(["a", "b"], np.zeros((2, 3)), None, MODELS, ["t", "t"], ["1", "2"])
    with pytest.raises(RouteInputError, match="quality must hold values in"):
        RoutingData(["a"], np.full((1, 2), np.nan), None, MODELS, ["t"], ["1"])


def test_subset_by_index_and_mask():
    data = toy_data([f"q{i}" for i in range(5)])
    assert list(data.subset([3, 1]).ids) == ["q3", "q1"]
    mask = np.array([True, False, True, False, False])
    assert list(data.subset(mask).ids) == ["q0", "q2"]
    assert data.subset([]).n_queries == 0


# -- splits -----------------------------------------------------------------------------------


def test_split_is_disjoint_covering_and_seeded(routerbench):
    data = routerbench["train"]
    parts = split_indices(data.ids, (0.6, 0.2, 0.2), seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == data.n_queries and len(np.unique(joined)) == data.n_queries
    id_sets = [set(data.ids[part]) for part in parts]
    assert not (id_sets[0] & id_sets[1] or id_sets[0] & id_sets[2] or id_sets[1] & id_sets[2])
    assert [len(p) for p in parts] == pytest.approx(
        [0.6 * data.n_queries, 0.2 * data.n_queries, 0.2 * data.n_queries], abs=10
    )
    again = split_indices(data.ids, (0.6, 0.2, 0.2), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = split_indices(data.ids, (0.6, 0.2, 0.2), seed=4)
    assert not np.array_equal(parts[0], other[0])


def test_rows_of_one_query_stay_together():
    data = toy_data(["a", "a", "b", "c", "c", "c", "d", "e"])
    for seed in range(10):
        train, test = split_queries(data, (0.5, 0.5), seed=seed)
        assert not set(train.ids) & set(test.ids)
        assert train.n_queries + test.n_queries == data.n_queries


def test_split_rejects_bad_fractions():
    ids = [str(i) for i in range(10)]
    with pytest.raises(RouteInputError, match="must sum to 1"):
        split_indices(ids, (0.5, 0.4))
    with pytest.raises(RouteInputError, match="positive"):
        split_indices(ids, (1.2, -0.2))
    with pytest.raises(RouteInputError, match="would be empty"):
        split_indices(ids[:2], (0.8, 0.1, 0.1))


# -- prompt prefixes --------------------------------------------------------------------------


def test_shared_prefixes_cut_at_a_boundary():
    prompts = ["Ex 1\n\nEx 2\n\nWhat is up?", "Ex 1\n\nEx 2\n\nWhat is down?", "Solo"]
    tasks = ["qa", "qa", "code"]
    prefixes = shared_prefixes(prompts, tasks)
    # the common text runs into "What is ", but the prefix stops after the last blank line
    assert prefixes == {"qa": "Ex 1\n\nEx 2\n\n"}
    stripped = strip_prefixes([*prompts, "Other"], [*tasks, "qa"], prefixes)
    assert stripped == ["What is up?", "What is down?", "Solo", "Other"]


def test_routerbench_arc_prompts_share_five_examples(routerbench):
    train, test = routerbench["train"], routerbench["test"]
    prefixes = shared_prefixes(train.prompts, train.tasks)
    assert set(prefixes) == {"arc-challenge"}
    assert prefixes["arc-challenge"].count("Answer:") == 5
    stripped = strip_prefixes(test.prompts, test.tasks, prefixes)
    arc = [text for text, task in zip(stripped, test.tasks, strict=True) if task == "arc-challenge"]
    assert all(text.count("Answer:") >= 1 for text in arc)
    assert np.median([len(text) for text in arc]) < len(prefixes["arc-challenge"]) / 3
