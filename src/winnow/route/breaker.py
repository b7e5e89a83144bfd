"""Circuit breakers: an upstream that keeps failing, or over-reports usage, is rested.

One :class:`CircuitBreaker` per pool model. *Closed*, it takes calls. After ``failures``
consecutive failed calls (or at once, :meth:`CircuitBreaker.trip`, when it reported more usage
than was reserved) it *opens* for ``cooldown`` seconds and takes none, so requests stop trying it
first. Then it is *half-open*: one trial call goes through; success closes it, failure opens it
again for twice as long (up to ``max_cooldown``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Whether one upstream may be called now, from the outcomes of its recent calls.

    Parameters
    ----------
    failures : int
        Consecutive failures that open the breaker.
    cooldown : float
        Seconds the breaker first stays open.
    max_cooldown : float
        Longest rest after repeated failed trials.
    clock : callable returning seconds
        Monotonic time; tests pass one they advance.
    """

    def __init__(
        self,
        failures: int = 3,
        cooldown: float = 30.0,
        max_cooldown: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.rest = cooldown
        self.trial_in_flight = False
        self.trips = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() < self.opened_at + self.rest else "half-open"

    def allows_call(self) -> bool:
        """Closed, or half-open with no trial in flight."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self.trial_in_flight)

    def on_dispatch(self) -> None:
        """A call is sent; when half-open, it is the trial."""
        if self.state == "half-open":
            self.trial_in_flight = True

    def record_success(self) -> None:
        self.consecutive, self.opened_at, self.rest = 0, None, self.cooldown
        self.trial_in_flight = False

    def record_failure(self) -> None:
        was_trial = self.trial_in_flight
        self.trial_in_flight = False
        self.consecutive += 1
        if was_trial:
            self._open(min(2 * self.rest, self.max_cooldown))
        elif self.opened_at is None and self.consecutive >= self.failures:
            self._open(self.cooldown)

    def trip(self) -> None:
        """Open now (the upstream misbehaved in a way one call proves, e.g. over-reporting)."""
        self.trial_in_flight = False
        self._open(
            self.cooldown if self.opened_at is None else min(2 * self.rest, self.max_cooldown)
        )

    def seconds_left(self) -> float:
        """Seconds until a trial call is allowed (0 when one is)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.rest - self.clock())

    def _open(self, rest: float) -> None:
        self.opened_at, self.rest = self.clock(), rest
        self.trips += 1
