"""Every router ``winnow route eval`` compares, how each is calibrated, and the batch replay.

A router is made once per replayed stream (:data:`ROUTERS` maps its name to a factory of
``(traffic, knobs)``) and then called batch by batch with ``(rows, capacity, budget)``, so a
router with state (the paced one) starts every stream afresh. All knobs are set on training and
validation traffic (:func:`calibrate`) except ``lam_oracle``, which is bisected on the test
stream's realised batch spend and labelled an upper bound wherever it is shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from winnow.route.assign import Assignment, assign_batch
from winnow.route.baselines import (
    best_single_model,
    calibrate_lambda,
    calibrate_threshold,
    cheapest_model,
    clip_to_budget,
    constrained_choice,
    paced_lambda,
    per_query_choice,
    threshold_choice,
)
from winnow.route.batches import make_batches
from winnow.route.config import RouteEvalConfig
from winnow.route.evaluate import BatchOutcome, StreamScore, score_batch, score_stream
from winnow.route.robust import assign_budgeted_robust, robust_box

__all__ = [
    "ORACLE_MATCHED",
    "ROUTERS",
    "Knobs",
    "Traffic",
    "batch_versus_per_query",
    "best_constrained_per_query",
    "budget_per_query",
    "calibrate",
    "replay_stream",
    "run_stream",
    "score_routers",
    "with_oracle_price",
]

# Seconds per batch solve in evaluations. A 50-query batch solves in milliseconds, but one
# matrix-factorisation instance kept HiGHS proving its last gap for over 20 minutes; at the
# limit the best assignment found is used (its proven gap is in Assignment.gap).
SOLVE_SECONDS = 10.0

ORACLE_MATCHED = "per-query oracle-matched"


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
    """What each router was calibrated to at one budget level (prices ``lam`` in quality/USD)."""

    budget_per_query: float
    lam: float  # average cost on training traffic = the budget
    lam_matched: float  # per-query spend on validation traffic = the batch MILP's spend there
    lam_constrained: float  # the constrained router's price, best accuracy on validation
    pacing_step: float  # the paced router's step, best on validation
    threshold: float
    strong: int
    weak: int
    single: int
    cheapest: int
    kappa: float
    gamma: float
    lam_oracle: float = float("nan")  # matched to the test stream's batch spend: an upper bound


BatchRouter = Callable[[np.ndarray, np.ndarray, float], np.ndarray | Assignment]
"""``(rows, capacity [m], budget) -> [len(rows)]`` model per query, -1 = unanswered; routers
that solve the batch return the :class:`Assignment` (which says whether the solve was cut
short by its time limit)."""


def _stateless(route: Callable) -> Callable[[Traffic, Knobs], BatchRouter]:
    """A factory for a router that decides each batch on its own: ``route(t, rows, cap,
    budget, knobs)``."""
    return lambda t, k: lambda rows, cap, budget: route(t, rows, cap, budget, k)


def _milp(quality, t: Traffic, rows, capacity, budget) -> Assignment:
    return assign_batch(
        quality, t.cost[rows], capacity, budget, defer_infeasible=True, time_limit=SOLVE_SECONDS
    )


def _paced(t: Traffic, k: Knobs) -> BatchRouter:
    """Per-query routing whose price follows the stream's spend so far (its own state)."""
    floor = 0.01 / k.budget_per_query  # 1% of quality per budget-per-query of cost
    state = {"lam": max(k.lam, floor), "spent": 0.0, "budgeted": 0.0}

    def route(rows, capacity, budget):
        choice = per_query_choice(t.p_hat[rows], t.cost[rows], state["lam"])
        state["spent"] += float(t.cost[rows, choice].sum())
        state["budgeted"] += budget
        state["lam"] = paced_lambda(
            state["lam"], state["spent"], state["budgeted"], k.pacing_step, floor
        )
        return choice

    return route


ROUTERS: dict[str, Callable[[Traffic, Knobs], BatchRouter]] = {
    "batch": _stateless(lambda t, rows, cap, budget, k: _milp(t.p_hat[rows], t, rows, cap, budget)),
    "batch robust (box)": _stateless(
        lambda t, rows, cap, budget, k: _milp(
            robust_box(t.p_hat[rows], t.sigma[rows], k.kappa), t, rows, cap, budget
        )
    ),
    "batch robust (budgeted)": _stateless(
        lambda t, rows, cap, budget, k: assign_budgeted_robust(
            t.p_hat[rows],
            t.sigma[rows],
            t.cost[rows],
            cap,
            budget,
            k.gamma,
            defer_infeasible=True,
            time_limit=SOLVE_SECONDS,
        )
    ),
    "per-query": _stateless(
        lambda t, rows, cap, budget, k: per_query_choice(t.p_hat[rows], t.cost[rows], k.lam)
    ),
    "per-query matched": _stateless(
        lambda t, rows, cap, budget, k: per_query_choice(t.p_hat[rows], t.cost[rows], k.lam_matched)
    ),
    ORACLE_MATCHED: _stateless(
        lambda t, rows, cap, budget, k: per_query_choice(t.p_hat[rows], t.cost[rows], k.lam_oracle)
    ),
    "per-query paced": _paced,
    "per-query clipped": _stateless(
        lambda t, rows, cap, budget, k: clip_to_budget(
            per_query_choice(t.p_hat[rows], t.cost[rows], k.lam), t.cost[rows], budget
        )
    ),
    "per-query constrained": _stateless(
        lambda t, rows, cap, budget, k: constrained_choice(
            t.p_hat[rows], t.cost[rows], cap, budget, k.lam_constrained
        )
    ),
    "threshold (2 models)": _stateless(
        lambda t, rows, cap, budget, k: threshold_choice(
            t.p_hat[rows], k.strong, k.weak, k.threshold
        )
    ),
    "best single model": _stateless(lambda t, rows, cap, budget, k: np.full(len(rows), k.single)),
    "cheapest model": _stateless(lambda t, rows, cap, budget, k: np.full(len(rows), k.cheapest)),
    "oracle": _stateless(
        lambda t, rows, cap, budget, k: _milp(t.truth[rows], t, rows, cap, budget)
    ),
}


def budget_per_query(level: float, traffic: Traffic) -> float:
    """``level`` in [0, 1] from the cheapest model's mean cost to the best-estimate choice's."""
    rows = np.arange(len(traffic.cost))
    low = traffic.cost.min(axis=1).mean()
    high = traffic.cost[rows, traffic.p_hat.argmax(axis=1)].mean()
    return float(low + level * (high - low))


def calibrate(
    level: float, train: Traffic, val: Traffic, config: RouteEvalConfig, robust: bool = True
) -> Knobs:
    """Per-query knobs on training traffic; everything chosen by accuracy or spend on validation
    batches (the random stream): the matched price, the constrained price, the pacing step and,
    with ``robust``, kappa and Gamma (else 0)."""
    budget = budget_per_query(level, train)
    strong = int(np.argmax(train.truth.mean(axis=0)))
    weak = cheapest_model(train.cost)
    lam = calibrate_lambda(train.p_hat, train.cost, budget)
    knobs = Knobs(
        budget_per_query=budget, lam=lam, lam_matched=lam, lam_constrained=lam, pacing_step=1.0,
        threshold=calibrate_threshold(train.p_hat, train.cost, strong, weak, budget),
        strong=strong, weak=weak, single=best_single_model(train.truth, train.cost, budget),
        cheapest=weak, kappa=0.0, gamma=0.0,
    )  # fmt: skip
    batch_spend = run_stream("batch", val, "random", knobs, config).spend_per_query
    prices = sorted({lam, *(u / budget for u in config.constrained_prices)})
    knobs = dataclasses.replace(
        knobs,
        lam_matched=calibrate_lambda(val.p_hat, val.cost, batch_spend),
        lam_constrained=_best_on_validation(
            prices, "lam_constrained", "per-query constrained", knobs, val, config
        ),
        pacing_step=_best_paced_step(knobs, val, config),
    )
    if not robust:
        return knobs
    kappa = _best_on_validation(
        config.kappa_grid, "kappa", "batch robust (box)", knobs, val, config
    )
    gamma = _best_on_validation(
        config.gamma_grid, "gamma", "batch robust (budgeted)", knobs, val, config
    )
    return dataclasses.replace(knobs, kappa=kappa, gamma=gamma)


def with_oracle_price(knobs: Knobs, test: Traffic, batch_spend_per_query: float) -> Knobs:
    """``knobs`` with ``lam_oracle`` bisected on the test queries to the batch MILP's realised
    spend there: what no deployed router could know, so an upper bound, never a result."""
    return dataclasses.replace(
        knobs, lam_oracle=calibrate_lambda(test.p_hat, test.cost, batch_spend_per_query)
    )


def _best_on_validation(grid, field: str, router: str, knobs: Knobs, val, config) -> float:
    """The grid value with the best validation accuracy on the random stream; ties go to the
    smaller value."""
    values = sorted(grid)
    scores = [
        run_stream(router, val, "random", dataclasses.replace(knobs, **{field: v}), config).accuracy
        for v in values
    ]
    return float(values[int(np.argmax(scores))])


def _best_paced_step(knobs: Knobs, val: Traffic, config: RouteEvalConfig) -> float:
    """The pacing step with the best validation accuracy among those that kept the whole
    stream's spend within its budget; the least overspending one when none did."""
    results = []
    for step in sorted(config.pacing_steps):
        score = run_stream(
            "per-query paced", val, "random", dataclasses.replace(knobs, pacing_step=step), config
        )
        over = score.spend_per_query - knobs.budget_per_query
        results.append((over > 1e-9 * knobs.budget_per_query, over if over > 0 else 0.0,
                        -score.accuracy, step))  # fmt: skip
    return float(min(results)[3])


def replay_stream(
    router: str, traffic: Traffic, stream: str, knobs: Knobs, config: RouteEvalConfig
) -> tuple[list[BatchOutcome], int]:
    """Replay ``traffic`` as ``stream`` batches through a fresh ``router``: per-batch outcomes
    and the number of unanswered queries."""
    n, m = traffic.cost.shape
    difficulty = 1.0 - traffic.p_hat.max(axis=1)
    batches = make_batches(stream, n, config.batch_size, config.seed, traffic.tasks, difficulty)
    route = ROUTERS[router](traffic, knobs)
    outcomes, unanswered = [], 0
    for rows in batches:
        capacity = np.full(m, max(1, int(np.ceil(config.capacity_share * len(rows)))))
        budget = knobs.budget_per_query * len(rows)
        routed = route(rows, capacity, budget)
        solved = isinstance(routed, Assignment)
        choice = routed.choice if solved else routed
        unanswered += int((choice < 0).sum())
        limited = solved and routed.time_limit_hit
        truth, cost = traffic.truth[rows], traffic.cost[rows]
        outcomes.append(score_batch(choice, truth, cost, capacity, budget, limited))
    return outcomes, unanswered


def run_stream(
    router: str, traffic: Traffic, stream: str, knobs: Knobs, config: RouteEvalConfig
) -> StreamScore:
    """:func:`replay_stream`, scored."""
    return score_stream(*replay_stream(router, traffic, stream, knobs, config))


def score_routers(
    routers, test: Traffic, stream: str, knobs: Knobs, config: RouteEvalConfig
) -> dict[str, StreamScore]:
    """Each of ``routers`` replayed on ``test`` as ``stream``; the oracle-matched price is set
    from the batch MILP's spend on this very stream (so "batch" runs first when it is asked)."""
    names = sorted(routers, key=lambda name: name != "batch")
    scores = {}
    for name in names:
        if name == ORACLE_MATCHED:
            batch = scores.get("batch") or run_stream("batch", test, stream, knobs, config)
            knobs = with_oracle_price(knobs, test, batch.spend_per_query)
        scores[name] = run_stream(name, test, stream, knobs, config)
    return {name: scores[name] for name in routers}


def best_constrained_per_query(scores: dict[str, StreamScore]) -> str | None:
    """The most accurate per-query router that honoured the batch MILP's limits in this replay
    (no batch over budget, no capacity exceeded), the oracle-matched bound excepted; None when
    none did."""
    honoured = [
        name
        for name, score in scores.items()
        if name.startswith("per-query")
        and name != ORACLE_MATCHED
        and score.batches_over_budget == 0
        and score.capacity_violations == 0
    ]
    return max(honoured, key=lambda name: scores[name].accuracy, default=None)


def batch_versus_per_query(scores: dict[str, StreamScore]) -> dict:
    """One comparison row: the batch MILP's accuracy and spend against the per-query routers at
    matched spend, paced, and the best one that honoured the same limits (``batch - best
    constrained``, None when no per-query router honoured them)."""
    batch = scores["batch"]
    best = best_constrained_per_query(scores)
    row = {"batch": batch.accuracy, "batch spend $/q": batch.spend_per_query}
    for name in ("per-query matched", "per-query paced", ORACLE_MATCHED):
        if name in scores:
            row[name] = scores[name].accuracy
            row[f"{name} spend $/q"] = scores[name].spend_per_query
            row[f"{name} batches over budget"] = scores[name].batches_over_budget
            row[f"{name} capacity violations"] = scores[name].capacity_violations
    row["best constrained per-query"] = best
    row["best constrained accuracy"] = None if best is None else scores[best].accuracy
    row["batch - best constrained"] = (
        None if best is None else batch.accuracy - scores[best].accuracy
    )
    return row
