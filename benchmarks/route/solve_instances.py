"""Hard batch-assignment instances, as users send them: predicted qualities and real costs.

The easy instances of ``bench_solve.py`` draw quality and cost independently, so HiGHS proves
their optimum in milliseconds. Real batches are harder: costs span two orders of magnitude and
are correlated across models, and estimated qualities sit close together, so the budget row
makes the program a correlated knapsack. Two families:

- **predicted**: each quality estimator (kNN, logistic, matrix factorisation) fitted on the
  training split of a shipped data set by :func:`winnow.route.jobs.prepare_traffic` and
  predicting its test split; the costs are the test rows' own. Each (estimator, data set) is
  predicted once, then test rows are resampled with replacement (seeded) to ``n`` queries. The
  same seed draws the same rows for every estimator, so estimators compare on equal batches.
- **knapsack-like**: RouterBench costs, with quality rising in the log of each query's cost
  ratio to its cheapest model plus tiny noise (:func:`knapsack_like`): every upgrade buys little
  quality at a price proportional to itself, the hardest shape for the budget row.

RouteLLM's data has no costs; :func:`routellm_table` derives them from text length at the prices
behind RouterBench's costs (its cost columns fit ``$10 / $30`` per million input / output tokens
for gpt-4-1106-preview and ``$0.6 / $0.6`` for Mixtral-8x7B at 4 characters a token, r = 0.99).
GSM8K outputs are the models' recorded answers; an MMLU answer is one token (its files hold no
responses).

Budgets are given as a level: the fraction of the way from the cheapest assignment (each
query's cheapest model) to each query's best-predicted model (:func:`budget_at`). Capacity per
model is ``ceil(share * n)``.

Every function yields dicts with the arrays ``quality``, ``cost``, ``capacity``, the float
``budget`` and the labels in :data:`LABELS`; :func:`labels` keeps only the latter.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from winnow.common.config import load_config
from winnow.common.data import dataset_path
from winnow.route.datasets import COST_SUFFIX, ROUTELLM_BENCHMARKS, load_routellm
from winnow.route.jobs import RouteEvalConfig, prepare_traffic

__all__ = [
    "DATASETS",
    "ESTIMATORS",
    "LABELS",
    "LEVELS",
    "SHARES",
    "SIZES",
    "SLOW_BUDGET",
    "budget_at",
    "knapsack_instances",
    "knapsack_like",
    "labels",
    "predicted_instances",
    "predicted_test",
    "routellm_table",
]

ESTIMATORS = ("knn", "logistic", "mf")
DATASETS = ("routerbench", "routellm")
SIZES = (50, 1000, 10000)
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
SHARES = (0.25, 0.5, 1.0)
KNAPSACK_SHARE = 0.25
# An absolute budget (USD) at which the knapsack-like batch of 1,000 queries, seed 0, ran to
# any time limit at the default gap.
SLOW_BUDGET = (1000, 0, 0.8437)
LABELS = ("family", "estimator", "dataset", "n", "m", "level", "share", "seed", "budget")

# USD per million (input, output) tokens: the prices RouterBench's cost columns follow.
ROUTELLM_PRICES = {
    "gpt-4-1106-preview": (10.0, 30.0),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
}
CHARS_PER_TOKEN = 4.0


def labels(instance: dict) -> dict:
    """The instance without its arrays: what a result row records."""
    return {key: instance[key] for key in LABELS}


def budget_at(quality: np.ndarray, cost: np.ndarray, level: float) -> float:
    """The budget ``level`` of the way from the cheapest assignment to the best-quality one."""
    cheapest = cost.min(axis=1).sum()
    best = cost[np.arange(len(cost)), quality.argmax(axis=1)].sum()
    return float(cheapest + level * (best - cheapest))


def routellm_table() -> pd.DataFrame:
    """RouteLLM's GSM8K and MMLU queries in the routing table convention, costs from lengths."""
    folder = dataset_path("routing") / "routellm_mmlu_gsm8k"
    responses = pd.read_csv(folder / "gsm8k_responses.csv")
    frames = []
    for benchmark in ROUTELLM_BENCHMARKS:
        data = load_routellm(benchmark)
        # Rows line up with the responses file only if none was dropped.
        assert data.n_dropped == 0, f"routellm {benchmark}: {data.n_dropped} rows dropped"
        input_tokens = np.array([len(p) for p in data.prompts]) / CHARS_PER_TOKEN
        frame = pd.DataFrame({"prompt": data.prompts, "task": data.tasks, "sample_id": data.ids})
        for j, model in enumerate(data.models):
            if benchmark == "gsm8k":
                answers = responses[f"{model}_response"].fillna("").str.len().to_numpy()
                output_tokens = answers / CHARS_PER_TOKEN
            else:
                output_tokens = np.ones(data.n_queries)
            price_in, price_out = ROUTELLM_PRICES[model]
            frame[model] = data.quality[:, j]
            frame[f"{model}{COST_SUFFIX}"] = (
                input_tokens * price_in + output_tokens * price_out
            ) / 1e6
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def predicted_test(estimator: str, dataset: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(p_hat, cost)`` of the test queries, from ``estimator`` fitted on training queries.

    RouterBench keeps its own split; RouteLLM is split by ``prepare_traffic`` (30% test), from a
    table written to a temporary folder, as ``winnow route eval`` reads any table.
    """
    with tempfile.TemporaryDirectory(prefix="winnow-solve-instances-") as folder:
        source = "routerbench"
        if dataset == "routellm":
            source = str(Path(folder) / "routellm.csv")
            routellm_table().to_csv(source, index=False)
        config = load_config(
            RouteEvalConfig,
            {"seed": seed, "data": {"source": source}, "estimator": {"kind": estimator}},
        )
        _, _, test = prepare_traffic(config, quiet=True)
    return test.p_hat, test.cost


def predicted_instances(
    estimators: Iterable[str] = ESTIMATORS,
    datasets: Iterable[str] = DATASETS,
    sizes: Iterable[int] = SIZES,
    levels: Iterable[float] = LEVELS,
    shares: Iterable[float] = SHARES,
    seeds: Iterable[int] = (0, 1),
) -> Iterator[dict]:
    """Every (data set, estimator, n, seed, level, share), fitting each estimator once."""
    for dataset in datasets:
        for estimator in estimators:
            p_hat, cost = predicted_test(estimator, dataset)
            for n in sizes:
                for seed in seeds:
                    rows = np.random.default_rng(seed).integers(0, len(p_hat), n)
                    quality, batch_cost = p_hat[rows], cost[rows]
                    for level in levels:
                        budget = budget_at(quality, batch_cost, level)
                        for share in shares:
                            yield {
                                "family": f"predicted_{estimator}_{dataset}",
                                "estimator": estimator,
                                "dataset": dataset,
                                "n": n,
                                "m": quality.shape[1],
                                "level": level,
                                "share": share,
                                "seed": seed,
                                "budget": budget,
                                "quality": quality,
                                "cost": batch_cost,
                                "capacity": np.full(quality.shape[1], int(np.ceil(share * n))),
                            }


def knapsack_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(quality, cost)`` of ``n`` RouterBench rows whose quality follows the cost ratio.

    All four CSV files, rows with a missing correctness or cost dropped, ``n`` rows sampled
    (with replacement beyond the rows there are); with ``c`` the ``[n, 11]`` costs,
    ``quality = clip(0.3 + 0.08 log(c / c_min + 1) + N(0, 0.002), 0, 1)`` rounded to 6 decimals.
    """
    folder = dataset_path("routing") / "routerbench_subset"
    frame = pd.concat([pd.read_csv(path) for path in sorted(folder.glob("*.csv"))])
    costs = [column for column in frame.columns if column.endswith(COST_SUFFIX)]
    models = [column.removesuffix(COST_SUFFIX) for column in costs]
    frame = frame.dropna(subset=models + costs)
    sample = frame.sample(n, replace=n > len(frame), random_state=seed)
    cost = sample[costs].to_numpy(dtype=float)
    noise = np.random.default_rng(seed + 1).normal(0.0, 0.002, cost.shape)
    ratio = cost / cost.min(axis=1, keepdims=True)
    quality = np.clip(0.3 + 0.08 * np.log(ratio + 1.0) + noise, 0.0, 1.0)
    return np.round(quality, 6), cost


def knapsack_instances(
    sizes: Iterable[int] = SIZES, levels: Iterable[float] = LEVELS, seeds: Iterable[int] = (0, 1)
) -> Iterator[dict]:
    """Every (n, seed, level) at capacity ``ceil(0.25 n)``, plus :data:`SLOW_BUDGET`'s case."""
    for n in sizes:
        for seed in seeds:
            quality, cost = knapsack_like(n, seed)
            budgets = [(level, budget_at(quality, cost, level)) for level in levels]
            if (n, seed) == SLOW_BUDGET[:2]:
                budgets.append((None, SLOW_BUDGET[2]))
            for level, budget in budgets:
                yield {
                    "family": "knapsack_like",
                    "estimator": None,
                    "dataset": "routerbench",
                    "n": n,
                    "m": quality.shape[1],
                    "level": level,
                    "share": KNAPSACK_SHARE,
                    "seed": seed,
                    "budget": budget,
                    "quality": quality,
                    "cost": cost,
                    "capacity": np.full(quality.shape[1], int(np.ceil(KNAPSACK_SHARE * n))),
                }
