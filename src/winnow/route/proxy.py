"""The routing proxy's work: windows of chat requests, their plan, the ledger, upstream calls.

:mod:`winnow.route.server` puts it behind HTTP. A request's journey:

1. **Admission.** Bodies over ``max_request_bytes`` get a 413. ``max_tokens`` (or
   ``max_completion_tokens``) is set to ``max_tokens_cap`` when absent and clamped to it when
   larger; an answer cut short says so with ``finish_reason: "length"``. The worst-case cost
   on each model is ``prompt_bound * input_price + n * max_tokens * output_price``, where
   ``prompt_bound`` comes from ``prompt_token_bound`` (see
   :data:`~winnow.route.proxy_config.PROMPT_TOKEN_BOUNDS`). A request whose worst case on every
   model it may use exceeds a whole window's or day's budget could never be served: 400.
2. **Batching.** A window opens with the first waiting request and closes after
   ``window_seconds`` or once ``max_batch`` requests wait; the rest wait for the next window.
   ``budget_per_window`` applies to each window, so windows closed early by ``max_batch`` can
   spend faster than ``budget_per_window / window_seconds``; the day's budget caps the total.
3. **Routing.** The quality model's ``p_hat`` scores the requests that may go anywhere (with
   ``robust`` set, its ``sigma`` too: a box or budgeted robust plan), and
   :func:`winnow.route.assign.assign_batch` assigns them under each model's free capacity and the
   money left for the window: ``min(window budget, day budget) - spent - reserved``, less what
   the window's requests for named models may need, which are placed first. A request the
   assignment defers (or whose model has no slot or money left) waits for the next window while
   the day has room, for up to ``max_wait_seconds``; then it gets a 429 with ``Retry-After``:
   until UTC midnight when the day's budget is what is short, one window otherwise. A request is
   answered through its one future, which takes the first answer and ignores the rest.
4. **Forwarding.** A placed request holds its worst-case cost in the :class:`BudgetLedger` and a
   slot of its model's ``capacity`` (calls in flight) until its call ends; then the ledger settles
   the ``usage`` the upstream reports (``prompt_tokens * input + completion_tokens * output``).
   The answer is the upstream's JSON with ``model`` set to the pool model used, plus headers
   ``x-winnow-model`` and ``x-winnow-cost`` (USD charged, exact to 1e-12).
5. **Failover.** A failed call moves the request to the next model in its order (the assigned
   one, then the others by predicted quality, cheaper first on ties) that has a free slot and
   whose worst case fits the request's window (and that window's day); named-model requests
   have no next model. When none is left: 502 if every model was tried, else 429 (the rest did
   not fit the budget or capacity now). What each upstream outcome is charged, and whether the
   request moves on, is the table in :mod:`winnow.route.upstream`.

**The budget guarantee.** The ledger is the only place money is decided: one lock, integer
picodollars, and a reservation is refused unless the window's and the day's totals (reserved +
settled) stay within their budgets. The assignment only advises: a request whose reservation is
refused moves down its order or gets a 429. So no interleaving of 200 concurrent requests,
failovers and settlements can overdraw either budget, except by what an upstream reports above
a reservation: that is charged to both budgets at once, so later reservations are refused rather
than spending further, and the upstream rests (below). It bounds real spend as long as usage
stays within the reservation: ``max_tokens`` is forwarded capped, and the default prompt bound,
the UTF-8 bytes of the prompt fields plus :data:`~winnow.route.chat_requests.
MESSAGE_OVERHEAD_TOKENS` per message, is an upper bound for byte-level BPE and SentencePiece
(byte-fallback) tokenizers. ``"chars_over_4"`` is tighter but only an estimate. The local ledger
lives in one process: serve it with one worker (:func:`winnow.route.server.serve` does); with
``ledger.backend: redis`` replicas share budgets and capacity (:mod:`winnow.route.redis_ledger`)
and a ledger that does not answer gets a 503, never an unaccounted call.

**Resting upstreams.** Each model has a :class:`~winnow.route.breaker.CircuitBreaker`: after
``breaker_failures`` consecutive failed calls, or one over-reported usage, it rests for
``breaker_cooldown_seconds`` (doubling after each failed trial call): the plan gives it no
capacity and failover skips it. **Waiting.** At most ``max_waiting`` requests queue; more get a
429 ``queue_full``. A request a window cannot place (its budget or capacity went to others)
waits for the next window while the day has room, up to ``max_wait_seconds`` after it arrived;
then it gets a 429. A client that disconnects before its call is dispatched is dropped and never
billed; after dispatch the call completes and is billed. Answers carry
``x-winnow-window-remaining`` and ``x-winnow-day-remaining`` (USD), ``x-winnow-window`` (the
window that placed it), ``x-winnow-waited-ms`` (its wait for that window to close) and
``Server-Timing`` (``window``, ``plan`` and ``upstream`` durations in ms), from which a client
can tell the proxy's own share of its latency.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import numpy as np

from winnow.common.extras import require
from winnow.route.breaker import CircuitBreaker
from winnow.route.chat_requests import ChatRequest, cheapest_cost
from winnow.route.exceptions import RouteInputError
from winnow.route.ledger import (
    PICODOLLARS_PER_USD,
    Reservation,
    TokenPrice,
    Window,
    call_cost,
    format_usd,
    pico_to_usd,
)
from winnow.route.pending_request import PendingRequest
from winnow.route.proxy_answers import (
    budget_exhausted,
    error_response,
    ledger_unavailable,
    relay,
    routing_failed,
    shutting_down,
)
from winnow.route.proxy_config import ProxyConfig, QualityModel
from winnow.route.proxy_metrics import ProxyCounts, model_metrics, request_metrics
from winnow.route.redis_ledger import LedgerUnavailableError, make_ledger
from winnow.route.upstream import Failure, Reply, post_chat
from winnow.route.window_plan import WindowPlan, check_quality, plan_window, warm_up

fastapi = require("fastapi", "serve")
aiohttp = require("aiohttp", "serve")

__all__ = ["RoutingProxy"]

logger = logging.getLogger(__name__)

_DISCONNECT_POLL_SECONDS = 0.05


class RoutingProxy:
    """The proxy's state and work: the queue, the window loop, the ledger, the upstream calls.

    Parameters
    ----------
    config : ProxyConfig
    quality_model : QualityModel
        Scores routed requests; called in a worker thread once per window.
    clock : callable returning an aware datetime
        Current time; its UTC date decides the day budget.

    Attributes
    ----------
    ledger : BudgetLedger
    counts : the request and per-model counters behind ``/metrics``
    """

    def __init__(
        self, config: ProxyConfig, quality_model: QualityModel, clock: Callable[[], datetime]
    ) -> None:
        self.config = config
        self.quality_model = quality_model
        self.clock = clock
        self.names = [model.name for model in config.models]
        self.prices = [
            TokenPrice.from_usd(m.input_price_per_token, m.output_price_per_token)
            for m in config.models
        ]
        self.ledger = make_ledger(config)  # a Ledger; replicas share a Redis one (proxy.ledger)
        self.counts = ProxyCounts()
        self.in_flight = [0] * len(config.models)
        self.breakers = [
            CircuitBreaker(config.breaker_failures, config.breaker_cooldown_seconds)
            for _ in config.models
        ]
        self._capacity = [model.capacity for model in config.models]
        self._waiting: list[PendingRequest] = []
        self._plan_seconds: deque[float] = deque(maxlen=1000)  # recent windows' planning time
        self._tasks: set[asyncio.Task] = set()
        self._client: aiohttp.ClientSession | None = None
        self._arrived: asyncio.Event | None = None

    @asynccontextmanager
    async def running(self, client: aiohttp.ClientSession) -> AsyncIterator[RoutingProxy]:
        """Run the window loop with ``client`` for upstream calls; on exit, answer everyone."""
        self._client, self._arrived = client, asyncio.Event()
        await asyncio.to_thread(warm_up, self.quality_model, len(self.names))
        windows = asyncio.create_task(self._run_windows())
        try:
            yield self
        finally:
            windows.cancel()
            await asyncio.gather(windows, return_exceptions=True)
            self._answer_all(self._waiting, shutting_down)
            self._waiting.clear()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._arrived = None

    async def submit(
        self,
        request: ChatRequest,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> fastapi.responses.JSONResponse:
        """Queue ``request`` and wait for its answer; :class:`RouteInputError` if unaffordable.

        ``disconnected`` (e.g. Starlette's ``request.is_disconnected``) is polled while the
        request waits: a client gone before its call is dispatched is dropped, unbilled; after
        dispatch the call completes and is billed (its answer has no reader).
        """
        costs = [
            call_cost(request.prompt_tokens, request.completion_tokens, p) for p in self.prices
        ]
        cheapest = cheapest_cost(costs, request.model)
        budget = min(self.ledger.window_budget, self.ledger.day_budget)
        if cheapest > budget:
            raise RouteInputError(
                f"this request may cost up to ${format_usd(cheapest)} ({request.prompt_tokens} "
                f"prompt tokens bound, {request.completion_tokens} completion tokens), more than "
                f"a whole window or day may spend (${format_usd(budget)}); lower max_tokens or n, "
                "or shorten the prompt"
            )
        if self._arrived is None:
            return shutting_down()
        if len(self._waiting) >= self.config.max_waiting:
            self.counts.queue_full += 1
            retry = max(1, math.ceil(self.config.window_seconds))
            return error_response(
                429,
                f"{len(self._waiting)} requests are already waiting (max_waiting); retry shortly",
                "queue_full",
                headers={"Retry-After": str(retry)},
            )
        loop = asyncio.get_running_loop()
        pending = PendingRequest(request, costs, loop.create_future())
        pending.arrived = loop.time()
        pending.wait_until = pending.arrived + self.config.max_wait_seconds
        self._waiting.append(pending)
        self._arrived.set()
        while disconnected is not None and pending.window is None:
            done, _ = await asyncio.wait({pending.future}, timeout=_DISCONNECT_POLL_SECONDS)
            if done or pending.window is not None:
                break
            if await disconnected():
                self._drop(pending)
                return error_response(499, "the client closed the request", "client_closed")
        return await asyncio.shield(pending.future)

    def _drop(self, pending: PendingRequest) -> None:
        """Forget a request whose client left before dispatch; it is never placed or billed."""
        pending.dropped = True
        self.counts.disconnected += 1
        if pending in self._waiting:
            self._waiting.remove(pending)
        pending.answer(error_response(499, "the client closed the request", "client_closed"))

    # -- windows ----------------------------------------------------------------------------

    async def _run_windows(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._route(batch)
            except asyncio.CancelledError:
                self._answer_all(batch, shutting_down)
                raise
            except LedgerUnavailableError as exc:
                logger.error("a window of %d requests was refused: %s", len(batch), exc)
                self._answer_all(batch, ledger_unavailable)
            except Exception:
                logger.exception("routing a window of %d requests failed", len(batch))
                self._answer_all(batch, routing_failed)

    async def _next_batch(self) -> list[PendingRequest]:
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.window_seconds
        while len(self._waiting) < self.config.max_batch and loop.time() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        batch = self._waiting[: self.config.max_batch]
        del self._waiting[: self.config.max_batch]
        return batch

    async def _route(self, batch: list[PendingRequest]) -> None:
        closed = asyncio.get_running_loop().time()
        for pending in batch:
            pending.waited = closed - pending.arrived
        window = self.ledger.open_window(self.clock().astimezone(timezone.utc).date())
        batch = [p for p in batch if not p.dropped]
        named = [p for p in batch if p.request.model is not None]
        routed = [p for p in batch if p.request.model is None]
        orders = await self._plan(window, named, routed) if routed else []
        if routed:
            planned = asyncio.get_running_loop().time() - closed
            self._plan_seconds.append(planned)
            for pending in batch:
                pending.planned = planned
        for pending, order in [
            *((p, [p.request.model]) for p in named),
            *zip(routed, orders, strict=True),
        ]:
            if pending.dropped:  # its client left while the window was planned
                continue
            pending.window, pending.candidates = window, order
            self._place(pending)

    async def _plan(
        self, window: Window, named: list[PendingRequest], routed: list[PendingRequest]
    ) -> list[list[int]]:
        # Named requests are placed first, so the plan leaves them their slots and money.
        taken = Counter(p.request.model for p in named)
        shared = self.config.ledger.backend == "redis"  # then every replica's calls count
        busy = self.ledger.in_flight(self.names) if shared else self.in_flight
        free = [
            max(0, self._capacity[j] - busy[j] - taken[j])
            if self.breakers[j].allows_call()
            else 0  # resting after failures: the plan leaves it out
            for j in range(len(self.names))
        ]
        money = self.ledger.available(window) - sum(p.costs[p.request.model] for p in named)
        cost = np.array([p.costs for p in routed], dtype=float) / PICODOLLARS_PER_USD
        prompts = [p.request.prompt for p in routed]

        def plan() -> WindowPlan:
            p_hat, sigma = self.quality_model.predict(prompts)
            quality = check_quality(p_hat, len(routed), len(self.names))
            budget = pico_to_usd(max(0, money))
            return plan_window(
                quality, cost, np.array(free), budget, self.config.window_seconds,
                np.asarray(sigma, dtype=float), self.config.robust, self.config.plan_mip_gap,
            )  # fmt: skip

        planned = await asyncio.to_thread(plan)
        self.counts.record_plan(planned.time_limit_hit, planned.mip_gap)
        return planned.orders

    def _place(self, pending: PendingRequest) -> None:
        try:
            claim = self._claim(pending)
        except LedgerUnavailableError:  # this request only: the others may still be placed
            pending.answer(ledger_unavailable())
            return
        if claim is None and self._may_wait(pending):
            self._requeue(pending)
            return
        if claim is None:
            self.counts.deferred += 1
            pending.answer(self._unaffordable(pending))
            return
        model, reservation = claim
        self.counts.assigned[self.names[model]] += 1
        task = asyncio.create_task(self._forward(pending, model, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _may_wait(self, pending: PendingRequest) -> bool:
        """Whether a request this window could not place may wait for the next one: within
        ``max_wait_seconds`` of its arrival, and only while the day still has room for it."""
        if asyncio.get_running_loop().time() >= pending.wait_until:
            return False
        return (
            cheapest_cost(pending.costs, pending.request.model)
            <= self.ledger.remaining(pending.window)[1]
        )

    def _requeue(self, pending: PendingRequest) -> None:
        """Back to the front of the queue, for the next window's plan."""
        pending.window, pending.candidates, pending.crowded_out = None, [], False
        self.counts.requeued += 1
        self._waiting.insert(0, pending)
        self._arrived.set()

    def _claim(self, pending: PendingRequest) -> tuple[int, Reservation] | None:
        """Reserve the first model of ``pending``'s order that has a free slot and fits."""
        while pending.candidates:
            model = pending.candidates.pop(0)
            reservation = None
            if self.in_flight[model] < self._capacity[model] and self.breakers[model].allows_call():
                reservation, _ = self.ledger.try_claim(
                    pending.window, pending.costs[model], self.names[model], self._capacity[model]
                )
            if reservation is None:
                pending.crowded_out = True
                continue
            self.in_flight[model] += 1
            self.breakers[model].on_dispatch()
            return model, reservation
        return None

    # -- upstream calls ---------------------------------------------------------------------

    async def _forward(self, pending: PendingRequest, model: int, reservation: Reservation) -> None:
        failures = []
        try:
            while True:
                outcome, charged = await self._attempt(pending, model, reservation)
                name = self.names[model]
                if isinstance(outcome, Reply):
                    if outcome.status < 300:
                        self.counts.served[name] += 1
                    timing = {
                        "window": pending.waited,
                        "plan": pending.planned,
                        "upstream": pending.upstream,
                    }
                    window, left = pending.window.index, self._left(pending.window)
                    pending.answer(relay(outcome, name, charged, window, timing, left))
                    return
                self.breakers[model].record_failure()
                self.counts.errors[name] += 1
                failures.append(f"{name}: {outcome.reason}")
                claim = self._claim(pending)
                if claim is None:
                    pending.answer(self._exhausted(pending, failures))
                    return
                self.counts.fallbacks += 1
                model, reservation = claim
        except asyncio.CancelledError:
            pending.answer(shutting_down())
            raise
        except LedgerUnavailableError as exc:  # a fallback could not be reserved
            logger.error("a request's fallback was refused: %s", exc)
            pending.answer(ledger_unavailable())
        except Exception:
            logger.exception("forwarding a request failed")
            pending.answer(routing_failed())

    async def _attempt(
        self, pending: PendingRequest, model: int, reservation: Reservation
    ) -> tuple[Reply | Failure, int]:
        """One upstream call; its slot and reservation are closed whatever happens."""
        outcome: Reply | Failure = Failure("interrupted", billed=True)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            spec = self.config.models[model]
            outcome = await post_chat(
                self._client, spec, pending.request.body, self.config.charge_failed_requests
            )
        finally:
            pending.upstream += loop.time() - sent
            self.in_flight[model] -= 1
            try:
                charged = self._settle(model, reservation, outcome)
            except LedgerUnavailableError as exc:  # it expires, charged in full, once back
                logger.error("a call could not be settled: %s", exc)
                charged = reservation.amount
        return outcome, charged

    def _settle(self, model: int, reservation: Reservation, outcome: Reply | Failure) -> int:
        """Charge the call; a 2xx or a pass-through 4xx counts as a working upstream."""
        if isinstance(outcome, Failure):
            return self.ledger.settle(reservation, reservation.amount if outcome.billed else 0)
        self.breakers[model].record_success()
        if outcome.status >= 300:
            return self.ledger.settle(reservation, 0)
        if outcome.usage is None:
            self.counts.usage_anomalies += 1
            return self.ledger.settle(reservation, reservation.amount)
        actual = call_cost(*outcome.usage, self.prices[model])
        if actual > reservation.amount:  # charged as reported; the upstream is rested
            self.counts.usage_over_reservation += 1
            self.breakers[model].trip()
        return self.ledger.settle(reservation, actual)

    def _left(self, window: Window | None) -> tuple[int, int] | None:
        """Picodollars left in ``window`` and its day (negative past an over-report), or None:
        no window, or a shared ledger that does not answer (the headers are then left out)."""
        try:
            return None if window is None else self.ledger.remaining(window)
        except LedgerUnavailableError:
            return None

    # -- answers ----------------------------------------------------------------------------

    def _unaffordable(
        self, pending: PendingRequest, cause: str = ""
    ) -> fastapi.responses.JSONResponse:
        """429 saying what is short, today's budget or this window's, and when to retry."""
        return budget_exhausted(
            cheapest_cost(pending.costs, pending.request.model),
            self.ledger.remaining(pending.window),
            (self.ledger.window_budget, self.ledger.day_budget),
            self.clock().astimezone(timezone.utc),
            self.config.window_seconds,
            cause,
        )

    def _exhausted(
        self, pending: PendingRequest, failures: list[str]
    ) -> fastapi.responses.JSONResponse:
        tried = "; ".join(failures)
        if pending.crowded_out:
            self.counts.deferred += 1
            return self._unaffordable(
                pending, f"upstream failed ({tried}) and no other model fits: "
            )
        return error_response(
            502, f"every model this request may use failed: {tried}", "upstream_error"
        )

    def _answer_all(
        self, batch: list[PendingRequest], respond: Callable[[], fastapi.responses.JSONResponse]
    ) -> None:
        for pending in batch:
            pending.answer(respond())

    def metrics(self) -> dict[str, Any]:
        """The ``/metrics`` document: request and per-model counts, and the ledger in USD."""
        return {
            "requests": request_metrics(self.counts, len(self._waiting), self._plan_seconds),
            "models": model_metrics(
                self.names, self.counts, self.in_flight, self._capacity, self.breakers
            ),
            "today": self.clock().astimezone(timezone.utc).date().isoformat(),
            "budget": self.ledger.report(),
        }
