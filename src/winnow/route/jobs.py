"""``winnow route eval``: batch-level vs per-query routing on real traffic, at equal budgets.

The pipeline: load RouterBench (or any routing table), embed prompts, fit a quality estimator on
training queries, calibrate each per-query router's knob on training traffic and the robust
level on a validation split, then replay the test queries as random, task-skewed and adversarial
batch streams at several per-query budgets, scoring every router on the true outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from winnow.common.config import Config
from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, run_section
from winnow.route.assign import assign_batch
from winnow.route.baselines import (
    best_single_model,
    calibrate_lambda,
    calibrate_threshold,
    cheapest_model,
    clip_to_budget,
    per_query_choice,
    threshold_choice,
)
from winnow.route.batches import make_batches
from winnow.route.datasets import (
    RoutingData,
    load_routerbench,
    load_routing_table,
    shared_prefixes,
    split_queries,
    strip_prefixes,
)
from winnow.route.evaluate import BatchOutcome, StreamScore, score_batch, score_stream
from winnow.route.robust import assign_budgeted_robust, robust_box

__all__ = ["RouteEvalConfig", "evaluate_routers", "route_eval_section", "run_route_eval"]


class DataConfig(Config):
    """RouterBench from the shipped data, or any table in its column convention."""

    source: str = Field("routerbench", description="'routerbench' or a CSV/Parquet path")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="for a table without a test split")


class FeatureConfig(Config):
    backend: str = Field("tfidf", description="'tfidf', 'minilm' or a sentence-transformers id")
    strip_shared_prefix: bool = True
    cache_dir: str = ".cache/winnow/embeddings"


class EstimatorConfig(Config):
    kind: str = Field("knn", pattern="^(constant|knn|logistic|mf)$")
    k: int = Field(25, ge=1, description="neighbours, for kind=knn")


class RouteEvalConfig(Config):
    """Everything ``winnow route eval`` needs; defaults reproduce the documented table."""

    seed: int = 0
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    batch_size: int = Field(50, ge=2)
    capacity_share: float = Field(
        0.25, gt=0, le=1, description="each model serves at most this share of a batch"
    )
    budget_levels: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 0.75],
        min_length=1,
        description="per-query budgets, as fractions from the cheapest to the best-quality cost",
    )
    streams: list[str] = Field(default_factory=lambda: ["random", "task", "adversarial"])
    kappa_grid: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    gamma_grid: list[float] = Field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0])


@dataclass(frozen=True)
class Traffic:
    """Estimated and true quality, and cost, of one set of queries."""

    p_hat: np.ndarray
    sigma: np.ndarray
    truth: np.ndarray
    cost: np.ndarray
    tasks: np.ndarray
    models: tuple[str, ...]


@dataclass(frozen=True)
class Knobs:
    """What each router was calibrated to at one budget level."""

    budget_per_query: float
    lam: float
    threshold: float
    strong: int
    weak: int
    single: int
    cheapest: int
    kappa: float
    gamma: float


Router = Callable[[Traffic, np.ndarray, np.ndarray, float, Knobs], np.ndarray]


# Seconds per batch solve in evaluations. A 50-query batch solves in milliseconds, but one
# matrix-factorisation instance kept HiGHS proving its last gap for over 20 minutes; at the
# limit the best assignment found is used (its proven gap is in Assignment.gap).
SOLVE_SECONDS = 10.0


def _milp(p, traffic, rows, capacity, budget):
    return assign_batch(
        p, traffic.cost[rows], capacity, budget, defer_infeasible=True, time_limit=SOLVE_SECONDS
    ).choice


ROUTERS: dict[str, Router] = {
    "batch": lambda t, rows, cap, budget, k: _milp(t.p_hat[rows], t, rows, cap, budget),
    "batch robust (box)": lambda t, rows, cap, budget, k: _milp(
        robust_box(t.p_hat[rows], t.sigma[rows], k.kappa), t, rows, cap, budget
    ),
    "batch robust (budgeted)": lambda t, rows, cap, budget, k: (
        assign_budgeted_robust(
            t.p_hat[rows],
            t.sigma[rows],
            t.cost[rows],
            cap,
            budget,
            k.gamma,
            defer_infeasible=True,
            time_limit=SOLVE_SECONDS,
        ).choice
    ),
    "per-query": lambda t, rows, cap, budget, k: per_query_choice(
        t.p_hat[rows], t.cost[rows], k.lam
    ),
    "per-query clipped": lambda t, rows, cap, budget, k: clip_to_budget(
        per_query_choice(t.p_hat[rows], t.cost[rows], k.lam), t.cost[rows], budget
    ),
    "threshold (2 models)": lambda t, rows, cap, budget, k: threshold_choice(
        t.p_hat[rows], k.strong, k.weak, k.threshold
    ),
    "best single model": lambda t, rows, cap, budget, k: np.full(len(rows), k.single),
    "cheapest model": lambda t, rows, cap, budget, k: np.full(len(rows), k.cheapest),
    "oracle": lambda t, rows, cap, budget, k: _milp(t.truth[rows], t, rows, cap, budget),
}


def load_data(config: DataConfig, seed: int) -> tuple[RoutingData, RoutingData]:
    """(train, test): RouterBench's own split, or a query-level split of a table."""
    if config.source == "routerbench":
        return load_routerbench("train"), load_routerbench("test")
    data = load_routing_table(config.source)
    train, test = split_queries(data, (1 - config.test_fraction, config.test_fraction), seed)
    return train, test


def embed(config: FeatureConfig, train: RoutingData, others: list[RoutingData], quiet: bool):
    """Features for training prompts and for each other set, fitted on training prompts only."""
    from winnow.route.embeddings import TfidfEmbedder, embed_prompts

    def texts(data: RoutingData) -> list[str]:
        if not config.strip_shared_prefix:
            return list(data.prompts)
        return strip_prefixes(data.prompts, data.tasks, prefixes)

    prefixes = shared_prefixes(train.prompts, train.tasks) if config.strip_shared_prefix else {}
    if config.backend == "tfidf":
        embedder = TfidfEmbedder().fit(texts(train))
        return [embedder.transform(texts(d)) for d in [train, *others]]
    return [
        embed_prompts(texts(d), config.backend, cache_dir=config.cache_dir, quiet=quiet)
        for d in [train, *others]
    ]


def make_estimator(config: EstimatorConfig, seed: int):
    from winnow.route.estimators import (
        ConstantQualityEstimator,
        KNNQualityEstimator,
        LogisticQualityEstimator,
        MatrixFactorizationQualityEstimator,
    )

    return {
        "constant": lambda: ConstantQualityEstimator(),
        "knn": lambda: KNNQualityEstimator(k=config.k),
        "logistic": lambda: LogisticQualityEstimator(),
        "mf": lambda: MatrixFactorizationQualityEstimator(random_state=seed),
    }[config.kind]()


def budget_per_query(level: float, traffic: Traffic) -> float:
    """``level`` in [0, 1] from the cheapest model's mean cost to the best-estimate choice's."""
    rows = np.arange(len(traffic.cost))
    low = traffic.cost.min(axis=1).mean()
    high = traffic.cost[rows, traffic.p_hat.argmax(axis=1)].mean()
    return float(low + level * (high - low))


def calibrate(level: float, train: Traffic, val: Traffic, config: RouteEvalConfig) -> Knobs:
    """Per-query knobs on training traffic; kappa and Gamma on validation batches."""
    budget = budget_per_query(level, train)
    strong = int(np.argmax(train.truth.mean(axis=0)))
    weak = cheapest_model(train.cost)
    knobs = Knobs(
        budget_per_query=budget,
        lam=calibrate_lambda(train.p_hat, train.cost, budget),
        threshold=calibrate_threshold(train.p_hat, train.cost, strong, weak, budget),
        strong=strong,
        weak=weak,
        single=best_single_model(train.truth, train.cost, budget),
        cheapest=weak,
        kappa=0.0,
        gamma=0.0,
    )
    kappa = _best_on_validation(
        config.kappa_grid, lambda v: _replace(knobs, kappa=v), "batch robust (box)", val, config
    )
    gamma = _best_on_validation(
        config.gamma_grid,
        lambda v: _replace(knobs, gamma=v),
        "batch robust (budgeted)",
        val,
        config,
    )
    return _replace(knobs, kappa=kappa, gamma=gamma)


def _replace(knobs: Knobs, **changes) -> Knobs:
    return Knobs(**{**knobs.__dict__, **changes})


def _best_on_validation(grid, with_value, router: str, val: Traffic, config) -> float:
    """The rule for kappa and Gamma: the grid value with the best validation accuracy on the
    random stream; ties go to the smaller value (less conservative)."""
    values = sorted(grid)
    scores = [run_stream(router, val, "random", with_value(v), config).accuracy for v in values]
    return float(values[int(np.argmax(scores))])


def replay_stream(
    router: str, traffic: Traffic, stream: str, knobs: Knobs, config: RouteEvalConfig
) -> tuple[list[BatchOutcome], int]:
    """Replay ``traffic`` as ``stream`` batches through ``router``: per-batch outcomes and the
    number of unanswered queries."""
    n, m = traffic.cost.shape
    difficulty = 1.0 - traffic.p_hat.max(axis=1)
    batches = make_batches(stream, n, config.batch_size, config.seed, traffic.tasks, difficulty)
    outcomes, unanswered = [], 0
    for rows in batches:
        capacity = np.full(m, max(1, int(np.ceil(config.capacity_share * len(rows)))))
        budget = knobs.budget_per_query * len(rows)
        choice = ROUTERS[router](traffic, rows, capacity, budget, knobs)
        unanswered += int((choice < 0).sum())
        outcomes.append(
            score_batch(choice, traffic.truth[rows], traffic.cost[rows], capacity, budget)
        )
    return outcomes, unanswered


def run_stream(
    router: str, traffic: Traffic, stream: str, knobs: Knobs, config: RouteEvalConfig
) -> StreamScore:
    """:func:`replay_stream`, scored."""
    return score_stream(*replay_stream(router, traffic, stream, knobs, config))


def prepare_traffic(config: RouteEvalConfig, quiet: bool) -> tuple[Traffic, Traffic, Traffic]:
    """(train, validation, test) traffic with estimates from a model fitted on train only."""
    train_all, test = load_data(config.data, config.seed)
    train, val = split_queries(
        train_all, (1 - config.validation_fraction, config.validation_fraction), config.seed
    )
    x_train, x_val, x_test = embed(config.features, train, [val, test], quiet)
    estimator = make_estimator(config.estimator, config.seed).fit(x_train, train.quality)
    traffic = []
    for data, x in ((train, x_train), (val, x_val), (test, x_test)):
        p_hat, sigma = estimator.predict(x)
        traffic.append(
            Traffic(p_hat, sigma, data.quality, data.cost, np.asarray(data.tasks), data.models)
        )
    return tuple(traffic)


SPEND_TRACE_ROUTERS = ("batch", "per-query")


def evaluate_routers(
    config: RouteEvalConfig, quiet: bool = False
) -> tuple[list[dict], dict[str, list[BatchOutcome]], list[dict]]:
    """One row per (stream, budget level, router) with accuracy, spend and violations; the
    per-batch outcomes of the batch and per-query routers on the adversarial stream at the
    middle budget level (for the spend plot); and the estimator's calibration on test queries
    per model (ECE, Brier)."""
    from winnow.route.estimators import calibration_report

    train, val, test = prepare_traffic(config, quiet)
    calibration = calibration_report(test.p_hat, test.truth, test.models)
    rows = []
    middle = config.budget_levels[len(config.budget_levels) // 2]
    traces: dict[str, list[BatchOutcome]] = {}
    total = len(config.budget_levels) * len(config.streams)
    with track_progress("route eval", total=total, quiet=quiet) as bar:
        for level in config.budget_levels:
            knobs = calibrate(level, train, val, config)
            for stream in config.streams:
                for router in ROUTERS:
                    score = run_stream(router, test, stream, knobs, config)
                    rows.append(
                        {
                            "stream": stream,
                            "budget_level": level,
                            "budget_per_query": knobs.budget_per_query,
                            "router": router,
                            **score.__dict__,
                        }
                    )
                bar.advance(1, level=level, stream=stream)
            if level == middle:
                for router in SPEND_TRACE_ROUTERS:
                    traces[router] = replay_stream(router, test, "adversarial", knobs, config)[0]
    return rows, traces, calibration


def route_eval_section(config: RouteEvalConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Evaluate, plot accuracy vs budget per stream, and summarise batch vs per-query."""
    from winnow.route.plots import plot_accuracy_vs_budget, plot_batch_spend

    rows, traces, calibration = evaluate_routers(config, quiet)
    plot = run.save_plot(plot_accuracy_vs_budget(rows, config.streams), "route_accuracy_vs_budget")
    spend_plot = run.save_plot(plot_batch_spend(traces), "route_batch_spend")
    gains = _batch_vs_per_query(rows)
    table = [
        {
            "stream": r["stream"],
            "budget $/query": r["budget_per_query"],
            "router": r["router"],
            "accuracy": r["accuracy"],
            "spend $/query": r["spend_per_query"],
            "batches over budget": r["batches_over_budget"],
            "overspend $": r["overspend"],
            "capacity violations": r["capacity_violations"],
        }
        for r in rows
    ]
    markdown = (
        f"Test queries replayed in batches of {config.batch_size}; each model serves at most "
        f"{config.capacity_share:.0%} of a batch; quality estimated by "
        f"`{config.estimator.kind}` on `{config.features.backend}` features. *per-query* "
        "routers were calibrated to the same "
        "average budget on training traffic and are not stopped by the batch budget; "
        "*clipped* stops answering when a batch's money runs out (unanswered = wrong).\n\n"
        f"![accuracy vs budget](plots/{plot.name})\n\n"
        f"![spend per batch](plots/{spend_plot.name})\n\n"
        f"Calibration of `{config.estimator.kind}` on the test queries (mean Brier "
        f"{np.mean([c['brier'] for c in calibration]):.4f}, mean ECE "
        f"{np.mean([c['ece'] for c in calibration]):.4f}):\n\n"
        + markdown_table(calibration, digits=3)
        + "\nBatch-level minus per-query (clipped) accuracy, per stream and budget:\n\n"
        + markdown_table(gains, digits=3)
        + "\n<details><summary>All routers</summary>\n\n"
        + markdown_table(table, digits=4)
        + "\n</details>\n"
    )
    summary = {"rows": rows, "batch_vs_per_query": gains, "calibration": calibration}
    return ReportSection(markdown, summary)


def _batch_vs_per_query(rows: list[dict]) -> list[dict]:
    index = {(r["stream"], r["budget_level"], r["router"]): r for r in rows}
    gains = []
    for stream, level, router in index:
        if router != "batch":
            continue
        batch = index[(stream, level, "batch")]
        clipped = index[(stream, level, "per-query clipped")]
        raw = index[(stream, level, "per-query")]
        gains.append(
            {
                "stream": stream,
                "budget level": level,
                "batch": batch["accuracy"],
                "per-query clipped": clipped["accuracy"],
                "gain": batch["accuracy"] - clipped["accuracy"],
                "per-query overspend $": raw["overspend"],
            }
        )
    return gains


def run_route_eval(config: RouteEvalConfig, root: str | Path = "runs", quiet: bool = False) -> Path:
    """Run ``winnow route eval`` into a new run folder; returns the path of ``report.html``."""
    title = "Batch-level LLM routing under budget and capacity"
    return run_section("route-eval", config, route_eval_section, title, root, quiet)
