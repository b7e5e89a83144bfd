"""The routing proxy's counters and the ``/metrics`` document built from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from winnow.route.breaker import CircuitBreaker

__all__ = ["ProxyCounts", "model_metrics", "percentiles_ms", "request_metrics"]


@dataclass
class ProxyCounts:
    """Request and per-model counters (per-model ones keyed by pool model name)."""

    responses: Counter = field(default_factory=Counter)
    assigned: Counter = field(default_factory=Counter)
    served: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    fallbacks: int = 0
    deferred: int = 0
    rejected: int = 0
    usage_anomalies: int = 0
    usage_over_reservation: int = 0
    disconnected: int = 0
    queue_full: int = 0
    requeued: int = 0
    plans: int = 0
    plans_time_limited: int = 0  # stopped at the window's time limit, best plan used
    plan_max_gap: float = 0.0  # largest proven gap among those

    def record_plan(self, time_limit_hit: bool, mip_gap: float) -> None:
        """Count a window's plan; one cut short by its time limit also keeps its gap."""
        self.plans += 1
        if time_limit_hit:
            self.plans_time_limited += 1
            self.plan_max_gap = max(self.plan_max_gap, mip_gap)


def request_metrics(counts: ProxyCounts, waiting: int, plan_seconds) -> dict[str, Any]:
    """The ``requests`` part of ``/metrics``: outcomes, the queue, recent planning times."""
    return {
        "responses": {str(k): v for k, v in sorted(counts.responses.items())},
        "deferred": counts.deferred,
        "rejected": counts.rejected,
        "fallbacks": counts.fallbacks,
        "usage_anomalies": counts.usage_anomalies,
        "usage_over_reservation": counts.usage_over_reservation,
        "disconnected_before_dispatch": counts.disconnected,
        "queue_full": counts.queue_full,
        "requeued_for_next_window": counts.requeued,
        "waiting": waiting,
        "plan_ms": percentiles_ms(plan_seconds),
        "plans": counts.plans,
        "plans_time_limited": counts.plans_time_limited,
        "plan_max_gap_time_limited": counts.plan_max_gap,
    }


def model_metrics(
    names: Sequence[str],
    counts: ProxyCounts,
    in_flight: Sequence[int],
    capacity: Sequence[int],
    breakers: Sequence[CircuitBreaker],
) -> dict[str, dict[str, Any]]:
    """The ``models`` part of ``/metrics``: per pool model, its calls, slots and breaker."""
    return {
        name: {
            "assigned": counts.assigned[name],
            "served": counts.served[name],
            "errors": counts.errors[name],
            "in_flight": in_flight[j],
            "capacity": capacity[j],
            "breaker": breakers[j].state,
            "breaker_trips": breakers[j].trips,
            "rest_seconds_left": round(breakers[j].seconds_left(), 3),
        }
        for j, name in enumerate(names)
    }


def percentiles_ms(seconds) -> dict[str, float | None]:
    """p50 and p99 of recent planning times (quality model and MILP of one window), in ms."""
    if not seconds:
        return {"p50": None, "p99": None, "windows": 0}
    values = 1000 * np.asarray(seconds)
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "windows": len(values)}
