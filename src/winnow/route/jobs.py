"""``winnow route eval``: batch-level vs per-query routing on real traffic, at equal budgets.

The pipeline: load RouterBench (or any routing table), embed prompts, fit a quality estimator on
training queries, calibrate each per-query router's knob on training traffic and the robust
level on a validation split, then replay the test queries as random, task-skewed and adversarial
batch streams at several per-query budgets, scoring every router on the true outcomes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, run_section
from winnow.route.config import DataConfig, EstimatorConfig, FeatureConfig, RouteEvalConfig
from winnow.route.datasets import (
    RoutingData,
    load_routerbench,
    load_routing_table,
    shared_prefixes,
    split_queries,
    strip_prefixes,
)
from winnow.route.evaluate import BatchOutcome
from winnow.route.routers import (
    ROUTERS,
    SOLVE_SECONDS,
    Traffic,
    batch_versus_per_query,
    calibrate,
    replay_stream,
    score_routers,
)

__all__ = ["RouteEvalConfig", "evaluate_routers", "route_eval_section", "run_route_eval"]


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
) -> tuple[list[dict], list[dict], dict[str, list[BatchOutcome]], list[dict]]:
    """One row per (stream, budget level, router) with accuracy, spend and violations; one
    batch-versus-per-query row per (stream, budget level); the per-batch outcomes of the batch
    and per-query routers on the adversarial stream at the middle budget level (for the spend
    plot); and the estimator's calibration on test queries per model (ECE, Brier)."""
    from winnow.route.estimators import calibration_report

    train, val, test = prepare_traffic(config, quiet)
    calibration = calibration_report(test.p_hat, test.truth, test.models)
    rows, gains = [], []
    middle = config.budget_levels[len(config.budget_levels) // 2]
    traces: dict[str, list[BatchOutcome]] = {}
    total = len(config.budget_levels) * len(config.streams)
    with track_progress("route eval", total=total, quiet=quiet) as bar:
        for level in config.budget_levels:
            knobs = calibrate(level, train, val, config)
            for stream in config.streams:
                scores = score_routers(ROUTERS, test, stream, knobs, config)
                for router, score in scores.items():
                    rows.append(
                        {
                            "stream": stream,
                            "budget_level": level,
                            "budget_per_query": knobs.budget_per_query,
                            "router": router,
                            **score.__dict__,
                        }
                    )
                gains.append(
                    {"stream": stream, "budget level": level, **batch_versus_per_query(scores)}
                )
                bar.advance(1, level=level, stream=stream)
            if level == middle:
                for router in SPEND_TRACE_ROUTERS:
                    traces[router] = replay_stream(router, test, "adversarial", knobs, config)[0]
    return rows, gains, traces, calibration


def route_eval_section(config: RouteEvalConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Evaluate, plot accuracy vs budget per stream, and summarise batch vs per-query."""
    from winnow.route.plots import plot_accuracy_vs_budget, plot_batch_spend

    rows, gains, traces, calibration = evaluate_routers(config, quiet)
    plot = run.save_plot(plot_accuracy_vs_budget(rows, config.streams), "route_accuracy_vs_budget")
    spend_plot = run.save_plot(plot_batch_spend(traces), "route_batch_spend")
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
    cut_short = sum(r["solves_time_limited"] for r in rows)
    markdown = (
        f"Test queries replayed in batches of {config.batch_size}; each model serves at most "
        f"{config.capacity_share:.0%} of a batch; quality estimated by "
        f"`{config.estimator.kind}` on `{config.features.backend}` features. Per-query routers "
        "take `argmax p_hat - lam * cost`: *per-query* with lam set to the average budget on "
        "training traffic; *matched* with lam set so that its spend on validation traffic equals "
        "the batch MILP's there; *oracle-matched* bisected to the MILP's spend on this test "
        "stream (an upper bound, not a result); *paced* updates lam after each batch from the "
        "spend so far; *clipped* stops answering when a batch's money runs out; *constrained* "
        "honours the batch budget and capacities in arrival order, falling back to the best "
        "model that still fits. Unanswered queries count as wrong. Batch solves stopped at "
        f"their {SOLVE_SECONDS:g} s time limit (their best plan used): {cut_short}.\n\n"
        f"![accuracy vs budget](plots/{plot.name})\n\n"
        f"![spend per batch](plots/{spend_plot.name})\n\n"
        f"Calibration of `{config.estimator.kind}` on the test queries (mean Brier "
        f"{np.mean([c['brier'] for c in calibration]):.4f}, mean ECE "
        f"{np.mean([c['ece'] for c in calibration]):.4f}):\n\n"
        + markdown_table(calibration, digits=3)
        + "\nBatch MILP against per-query routers, per stream and budget (*best constrained*: "
        "the most accurate per-query router that broke no batch budget and no capacity):\n\n"
        + markdown_table(gains, digits=3)
        + "\n<details><summary>All routers</summary>\n\n"
        + markdown_table(table, digits=4)
        + "\n</details>\n"
    )
    summary = {
        "rows": rows,
        "batch_vs_per_query": gains,
        "calibration": calibration,
        "solves_time_limited": cut_short,
    }
    return ReportSection(markdown, summary)


def run_route_eval(config: RouteEvalConfig, root: str | Path = "runs", quiet: bool = False) -> Path:
    """Run ``winnow route eval`` into a new run folder; returns the path of ``report.html``."""
    title = "Batch-level LLM routing under budget and capacity"
    return run_section("route-eval", config, route_eval_section, title, root, quiet)
