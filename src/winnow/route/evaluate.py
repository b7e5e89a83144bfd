"""Scoring routers on batch streams: realised accuracy, spend, and every broken limit.

A router's decision for one batch is ``choice: [n_b]`` model indices, ``-1`` for a query it did
not answer (deferred, or clipped by a hard budget); an unanswered query counts as wrong. Accuracy
uses the *true* correctness, never the estimate the router saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from winnow.route.budget_rule import within_budget

__all__ = ["BatchOutcome", "StreamScore", "score_batch", "score_stream"]


@dataclass(frozen=True)
class BatchOutcome:
    """One batch: correct answers, spend, and how far it broke the budget and capacities."""

    size: int
    correct: float
    spend: float
    budget: float
    overspend: float
    capacity_excess: int
    time_limited: bool = False  # its solve stopped at the time limit (best plan, proven gap)


@dataclass(frozen=True)
class StreamScore:
    """A router over a whole stream of batches."""

    accuracy: float
    spend_per_query: float
    batches_over_budget: int
    overspend: float
    capacity_violations: int
    unanswered: int
    solves_time_limited: int = 0


def score_batch(
    choice: np.ndarray,
    truth: np.ndarray,
    cost: np.ndarray,
    capacity: np.ndarray,
    budget: float,
    time_limited: bool = False,
) -> BatchOutcome:
    """Score ``choice: [n_b]`` against ``truth, cost: [n_b, m]``, ``capacity: [m]``, ``budget``;
    ``time_limited`` says the router's solve stopped at its time limit."""
    answered = choice >= 0
    rows = np.flatnonzero(answered)
    picked = choice[answered]
    spend = float(cost[rows, picked].sum())
    loads = np.bincount(picked, minlength=truth.shape[1])
    return BatchOutcome(
        size=len(choice),
        correct=float(truth[rows, picked].sum()),
        spend=spend,
        budget=budget,
        overspend=max(0.0, spend - budget),
        capacity_excess=int(np.maximum(loads - capacity, 0).sum()),
        time_limited=time_limited,
    )


def score_stream(outcomes: list[BatchOutcome], unanswered: int) -> StreamScore:
    """Aggregate batch outcomes; a batch is over budget by the rule of
    :mod:`winnow.route.budget_rule` (within it, the difference is float noise)."""
    queries = sum(o.size for o in outcomes)
    over = [o for o in outcomes if not within_budget(o.spend, o.budget)]
    return StreamScore(
        accuracy=sum(o.correct for o in outcomes) / queries,
        spend_per_query=sum(o.spend for o in outcomes) / queries,
        batches_over_budget=len(over),
        overspend=float(sum(o.overspend for o in over)),
        capacity_violations=sum(o.capacity_excess for o in outcomes),
        unanswered=unanswered,
        solves_time_limited=sum(o.time_limited for o in outcomes),
    )
