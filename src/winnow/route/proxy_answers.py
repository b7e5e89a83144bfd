"""What the routing proxy answers a client: relayed upstream replies and its own errors.

Every answer is an OpenAI-style JSON response; relayed ones carry the ``x-winnow-*`` headers
(model, charge, window, window wait, budget left).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta, timezone
from typing import Any

from winnow.common.extras import require
from winnow.route.ledger import format_usd
from winnow.route.upstream import Reply

fastapi = require("fastapi", "serve")

__all__ = [
    "budget_exhausted",
    "error_response",
    "ledger_unavailable",
    "left_headers",
    "relay",
    "routing_failed",
    "shutting_down",
]


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None, **details: Any
) -> fastapi.responses.JSONResponse:
    """An OpenAI-style error body ``{"error": {"message", "type", ...}}``."""
    error = {"message": message, "type": kind, "param": None, "code": None, **details}
    return fastapi.responses.JSONResponse({"error": error}, status_code=status, headers=headers)


def budget_exhausted(
    cheapest: int,
    left: tuple[int, int],
    budgets: tuple[int, int],
    now: datetime,
    window_seconds: float,
    cause: str = "",
) -> fastapi.responses.JSONResponse:
    """429 saying what is short, today's budget or this window's, and when to retry.

    ``cheapest``: the request's least worst-case cost; ``left`` and ``budgets``: the window's
    and the day's, in picodollars; ``now``: an aware UTC time.
    """
    window_left, day_left = (max(0, amount) for amount in left)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
    if cheapest > day_left:
        retry = math.ceil((midnight - now).total_seconds())
        what = f"the daily budget is spent until it resets at {midnight.isoformat()}"
    else:
        retry = math.ceil(window_seconds)
        what = "this window's budget and capacity went to other requests; retry next window"
    retry = max(1, retry)
    message = (
        f"{cause}budget exhausted: {what} (this request may cost up to "
        f"${format_usd(cheapest)}; left: ${format_usd(window_left)} of "
        f"${format_usd(budgets[0])} in this window, "
        f"${format_usd(day_left)} of ${format_usd(budgets[1])} today)"
    )
    return error_response(
        429,
        message,
        "budget_exhausted",
        headers={"Retry-After": str(retry), **left_headers((window_left, day_left))},
        retry_after_seconds=retry,
        day_resets_at=midnight.isoformat(),
    )


def left_headers(left: tuple[int, int] | None) -> dict[str, str]:
    """``x-winnow-window-remaining`` and ``x-winnow-day-remaining`` (USD, never below 0)."""
    if left is None:
        return {}
    window, day = (format_usd(max(0, amount)) for amount in left)
    return {"x-winnow-window-remaining": window, "x-winnow-day-remaining": day}


def shutting_down() -> fastapi.responses.JSONResponse:
    """503: the proxy is stopping."""
    return error_response(503, "the proxy is shutting down; retry shortly", "unavailable")


def ledger_unavailable() -> fastapi.responses.JSONResponse:
    """503: the shared ledger did not answer, so no call is sent unaccounted."""
    return error_response(
        503, "the budget ledger is unavailable; nothing was sent; retry shortly", "unavailable"
    )


def routing_failed() -> fastapi.responses.JSONResponse:
    """500: planning or forwarding raised (the proxy logged it)."""
    return error_response(500, "routing this request failed; see the proxy's log", "internal")


def relay(
    reply: Reply,
    name: str,
    charged: int,
    window: int,
    timing: dict[str, float],
    left: tuple[int, int] | None,
) -> fastapi.responses.JSONResponse:
    """The upstream's answer with the model, the charge, the window that placed it, the budget
    left, and where its time went: ``timing`` (seconds) has ``window`` (its wait for the window
    to close: what batching costs), ``plan`` and ``upstream``, sent as ``Server-Timing``; the
    rest of its latency is the proxy's own handling."""
    payload = {**reply.payload, "model": name} if reply.status < 300 else reply.payload
    headers = {
        "x-winnow-model": name,
        "x-winnow-cost": format_usd(charged),
        "x-winnow-window": str(window),
        "x-winnow-waited-ms": f"{1000 * timing['window']:.3f}",
        "server-timing": ", ".join(f"{k};dur={1000 * v:.3f}" for k, v in timing.items()),
        **left_headers(left),
    }
    return fastapi.responses.JSONResponse(payload, status_code=reply.status, headers=headers)
