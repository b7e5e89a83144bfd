"""One chat request inside the routing proxy, from queueing to its single answer.

:class:`~winnow.route.proxy.RoutingProxy` keeps one per request: the worst-case cost on each
model, the window that placed it, the models still to try, and the times the answer's
``Server-Timing`` header reports. Its future takes the first answer and ignores the rest, so
every request is answered exactly once whatever path ends it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from winnow.route.chat_requests import ChatRequest

if TYPE_CHECKING:
    import fastapi

__all__ = ["PendingRequest"]


@dataclass(eq=False)
class PendingRequest:
    """One request in the proxy, from queueing to its single answer."""

    request: ChatRequest
    costs: list[int]
    future: asyncio.Future
    window: Any = None  # the ledger window that placed it
    candidates: list[int] = field(default_factory=list)
    crowded_out: bool = False
    dropped: bool = False  # the client left before dispatch: never placed, never billed
    wait_until: float = 0.0  # event-loop time after which it is no longer put back in the queue
    arrived: float = 0.0  # event-loop time it was queued
    waited: float = 0.0  # seconds from arrival until the window that placed it closed
    planned: float = 0.0  # seconds that window's plan took
    upstream: float = 0.0  # seconds in upstream calls, every attempt

    def answer(self, response: fastapi.responses.JSONResponse) -> None:
        if not self.future.done():
            self.future.set_result(response)
