"""Money for the routing proxy: token prices, call costs, and a budget ledger.

Every amount here is an integer number of picodollars (1e-12 USD), so sums and differences are
exact and ``settled + reserved <= budget`` is checked without rounding drift. Conversions from
USD round against the spender: prices round up (:func:`usd_to_pico` with ``rounding="up"``) and
budgets round down, so a bound that holds in picodollars also holds in USD.

The ledger holds two budgets: one per window (one routed batch) and one per UTC day. A call's
worst-case cost is reserved in the window it was routed in, and in that window's day, before the
call is sent; afterwards the reservation is settled with the actual cost or released. A
reservation is refused when it would lift either total, reserved plus settled, above its budget,
so neither total exceeds its budget, whatever order calls finish in, unless an upstream reports
more usage than its worst case: that cost is charged as reported (it was spent), the totals pass
their budget by that excess, and nothing more is reserved until there is room. Every method
takes one lock and never waits inside it: the ledger is safe from threads and, having no
``await``, from concurrent asyncio tasks.

Example::

    >>> from datetime import date
    >>> ledger = BudgetLedger(window_budget=100, day_budget=150)
    >>> window = ledger.open_window(date(2024, 1, 1))
    >>> r = ledger.try_reserve(window, 80)
    >>> ledger.try_reserve(window, 30) is None  # 80 + 30 > 100
    True
    >>> ledger.settle(r, 25)  # the call cost less than its worst case: 55 comes back
    25
    >>> ledger.remaining(window)
    (75, 125)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import count
from typing import Any, Literal, Protocol

from winnow.route.exceptions import RouteInputError

__all__ = [
    "PICODOLLARS_PER_USD",
    "BudgetLedger",
    "Ledger",
    "Reservation",
    "Spend",
    "TokenPrice",
    "Window",
    "call_cost",
    "format_usd",
    "pico_to_usd",
    "usd_to_pico",
]

PICODOLLARS_PER_USD = 10**12

_ROUNDING = {"up": ROUND_CEILING, "down": ROUND_FLOOR}


def usd_to_pico(usd: float, *, rounding: Literal["up", "down"]) -> int:
    """``usd`` in whole picodollars, rounded ``"up"`` (prices) or ``"down"`` (budgets).

    The float's shortest decimal form is converted exactly, so ``1.5e-7`` is 150000.
    """
    if usd < 0:
        raise RouteInputError(f"amount must be >= 0 USD, got {usd!r}; fix: pass a price or budget")
    scaled = Decimal(repr(float(usd))) * PICODOLLARS_PER_USD
    return int(scaled.to_integral_value(rounding=_ROUNDING[rounding]))


def pico_to_usd(pico: int) -> float:
    """Picodollars as USD, for reporting only (the float may round in the 16th digit)."""
    return pico / PICODOLLARS_PER_USD


def format_usd(pico: int) -> str:
    """Picodollars as an exact USD string with 12 decimals: ``1500000 -> "0.000001500000"``."""
    whole, frac = divmod(pico, PICODOLLARS_PER_USD)
    return f"{whole}.{frac:012d}"


@dataclass(frozen=True)
class TokenPrice:
    """A model's price in picodollars per prompt (``input``) and completion (``output``) token."""

    input: int
    output: int

    @classmethod
    def from_usd(cls, input_usd: float, output_usd: float) -> TokenPrice:
        """Prices given in USD per token, each rounded up to whole picodollars."""
        return cls(usd_to_pico(input_usd, rounding="up"), usd_to_pico(output_usd, rounding="up"))


def call_cost(prompt_tokens: int, completion_tokens: int, price: TokenPrice) -> int:
    """Cost of one call in picodollars: ``prompt * price.input + completion * price.output``."""
    return prompt_tokens * price.input + completion_tokens * price.output


@dataclass
class Spend:
    """Money held against one budget: ``reserved`` for calls in flight, ``settled`` for done."""

    reserved: int = 0
    settled: int = 0

    @property
    def total(self) -> int:
        """What the budget must cover: ``reserved + settled``."""
        return self.reserved + self.settled


@dataclass(eq=False)
class Window:
    """One routed batch: its own spend and a handle on its UTC day's spend (shared by all windows
    of that day). Callers get it from :meth:`BudgetLedger.open_window` and pass it back."""

    index: int
    day: date
    spend: Spend
    day_spend: Spend


@dataclass(frozen=True)
class Reservation:
    """A worst-case cost held in ``window`` and its day until it is settled or released."""

    id: int
    window: Window
    amount: int


class Ledger(Protocol):
    """What the proxy needs of a ledger: :class:`BudgetLedger` in one process, or
    :class:`~winnow.route.redis_ledger.RedisLedger` shared by replicas. Windows and reservations
    are the ledger's own handles, passed back to it."""

    window_budget: int
    day_budget: int

    def open_window(self, day: date) -> Any: ...

    def remaining(self, window: Any) -> tuple[int, int]: ...

    def available(self, window: Any) -> int: ...

    def try_claim(
        self, window: Any, amount: int, model: str | None = None, capacity: int = 0
    ) -> tuple[Any | None, str | None]: ...

    def settle(self, reservation: Any, actual: int) -> int: ...

    def report(self) -> dict[str, Any]: ...


class BudgetLedger:
    """Reserve, settle and release call costs against a per-window and a per-day budget.

    Parameters
    ----------
    window_budget, day_budget : int
        Budgets in picodollars, ``> 0``. A reservation never lifts a window's total (reserved +
        settled) above ``window_budget`` or a day's above ``day_budget``; only a call charged
        above its reservation can (:meth:`settle`).
    history : int, default 100
        How many recent windows and days :meth:`report` lists. Forgetting one changes only
        the report: each reservation holds its window, so it still settles where it was made.

    Attributes
    ----------
    peak_window, peak_day : int
        The largest total any window or day has reached, in picodollars.
    windows_opened : int
        How many windows :meth:`open_window` has started.
    overage : int
        Picodollars charged above reservations, in all (see :meth:`settle`).
    """

    def __init__(self, window_budget: int, day_budget: int, *, history: int = 100) -> None:
        for name, value in (("window_budget", window_budget), ("day_budget", day_budget)):
            if value <= 0:
                raise RouteInputError(f"{name} must be > 0 picodollars, got {value!r}")
        if history < 1:
            raise RouteInputError(f"history must be >= 1, got {history!r}")
        self.window_budget = window_budget
        self.day_budget = day_budget
        self.history = history
        self.peak_window = 0
        self.peak_day = 0
        self.windows_opened = 0
        self.overage = 0
        self._lock = threading.Lock()
        self._ids = count()
        self._windows: OrderedDict[int, Window] = OrderedDict()
        self._days: OrderedDict[date, Spend] = OrderedDict()
        self._open: set[int] = set()

    def open_window(self, day: date) -> Window:
        """Start a window in ``day`` (a UTC date; a date not seen before starts a fresh day)."""
        with self._lock:
            if day not in self._days:
                self._days[day] = Spend()
            window = Window(self.windows_opened, day, Spend(), self._days[day])
            self.windows_opened += 1
            self._windows[window.index] = window
            for book in (self._windows, self._days):
                while len(book) > self.history:
                    book.popitem(last=False)
            return window

    def remaining(self, window: Window) -> tuple[int, int]:
        """What is left of ``window``'s budget and of its day's budget, in picodollars."""
        with self._lock:
            return self._remaining(window)

    def available(self, window: Window) -> int:
        """The largest amount :meth:`try_reserve` would accept now in ``window``."""
        return min(self.remaining(window))

    def try_reserve(self, window: Window, amount: int) -> Reservation | None:
        """Hold ``amount`` in ``window`` and its day, or return ``None`` when it does not fit."""
        if amount < 0:
            raise RouteInputError(f"amount must be >= 0 picodollars, got {amount!r}")
        with self._lock:
            if amount > min(self._remaining(window)):
                return None
            reservation = Reservation(next(self._ids), window, amount)
            self._open.add(reservation.id)
            window.spend.reserved += amount
            window.day_spend.reserved += amount
            self.peak_window = max(self.peak_window, window.spend.total)
            self.peak_day = max(self.peak_day, window.day_spend.total)
            return reservation

    def try_claim(
        self, window: Window, amount: int, model: str | None = None, capacity: int = 0
    ) -> tuple[Reservation | None, str | None]:
        """:meth:`try_reserve` with :class:`~winnow.route.redis_ledger.RedisLedger`'s signature:
        in one process the caller counts a model's calls in flight, so ``model`` and
        ``capacity`` are not read here. Returns ``(reservation, None)`` or ``(None, "money")``."""
        reservation = self.try_reserve(window, amount)
        return reservation, None if reservation is not None else "money"

    def settle(self, reservation: Reservation, actual: int) -> int:
        """Close ``reservation``, charging ``actual``; returns the charge.

        What the reservation held beyond ``actual`` goes back to both budgets. A cost above the
        reservation (an upstream reporting more usage than its worst case) is charged as
        reported: it is money really spent, so both totals take it at once, may pass their
        budget by that one call's excess (``overage`` counts it), and every later reservation
        is refused until the window or day has room again.
        """
        if actual < 0:
            raise RouteInputError(f"actual cost must be >= 0 picodollars, got {actual!r}")
        with self._lock:
            if reservation.id not in self._open:
                raise RouteInputError(
                    f"reservation {reservation.id} is not open: it was settled or released "
                    "already; settle or release each reservation exactly once"
                )
            self._open.remove(reservation.id)
            for spend in (reservation.window.spend, reservation.window.day_spend):
                spend.reserved -= reservation.amount
                spend.settled += actual
            self.overage += max(0, actual - reservation.amount)
            self.peak_window = max(self.peak_window, reservation.window.spend.total)
            self.peak_day = max(self.peak_day, reservation.window.day_spend.total)
            return actual

    def release(self, reservation: Reservation) -> None:
        """Close ``reservation`` without charge (the call was never billed)."""
        self.settle(reservation, 0)

    def report(self) -> dict[str, Any]:
        """JSON-ready state in USD: budgets, peaks, and the recent windows' and days' spend."""
        with self._lock:
            return {
                "window_budget_usd": pico_to_usd(self.window_budget),
                "day_budget_usd": pico_to_usd(self.day_budget),
                "peak_window_usd": pico_to_usd(self.peak_window),
                "peak_day_usd": pico_to_usd(self.peak_day),
                "windows_opened": self.windows_opened,
                "overage_usd": pico_to_usd(self.overage),
                "open_reservations": len(self._open),
                "windows": [
                    {"index": w.index, "day": w.day.isoformat(), **_usd(w.spend)}
                    for w in self._windows.values()
                ],
                "days": [{"day": day.isoformat(), **_usd(s)} for day, s in self._days.items()],
            }

    def _remaining(self, window: Window) -> tuple[int, int]:
        return (
            self.window_budget - window.spend.total,
            self.day_budget - window.day_spend.total,
        )


def _usd(spend: Spend) -> dict[str, float]:
    return {"reserved_usd": pico_to_usd(spend.reserved), "settled_usd": pico_to_usd(spend.settled)}
