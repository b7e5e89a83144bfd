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
   until UTC midnight when the day's budget is what is short, one window otherwise. Every
   request gets one answer: a request is only
   ever answered through its one future, which takes the first answer and ignores the rest.
4. **Forwarding.** A placed request holds its worst-case cost in the :class:`BudgetLedger` and a
   slot of its model's ``capacity`` (calls in flight) until its call ends; then the ledger settles
   the ``usage`` the upstream reports (``prompt_tokens * input + completion_tokens * output``).
   The answer is the upstream's JSON with ``model`` set to the pool model used, plus headers
   ``x-winnow-model`` and ``x-winnow-cost`` (USD charged, exact to 1e-12).
5. **Failover.** A failed call moves the request to the next model in its order (the assigned
   one, then the others by predicted quality, cheaper first on ties) that has a free slot and
   whose worst case fits the request's window (and that window's day); named-model requests
   have no next model. When none is left: 502 if every model was tried, else 429 (the rest did
   not fit the budget or capacity now).

What a call is charged, and whether the request moves on:

==================================================  ==========================  ==========
upstream outcome                                    charged                     fails over
==================================================  ==========================  ==========
2xx with JSON and ``usage``                         the usage's cost [1]_       no
2xx with ``usage`` missing                          the whole reservation       no
400, 413, 422 (the request itself is invalid)       0, answer passed through    no
other status (401, 403, 404, 408, 429, 5xx)         0 [2]_                      yes
connection refused or not established               0                           yes
timeout or broken connection after sending, or a    the whole reservation [3]_  yes
2xx whose body is not a JSON object
==================================================  ==========================  ==========

.. [1] above the reservation it is charged as reported (the money was spent), counted in
   ``/metrics`` (``usage_over_reservation``, ``overage_usd``), and the upstream is rested.
.. [2] OpenAI-style APIs do not bill failed requests; ``charge_failed_requests=True`` charges
   the whole reservation instead.
.. [3] the upstream may have finished, and billed, the call; the proxy cannot know.

**The budget guarantee.** The ledger is the only place money is decided: one lock, integer
picodollars, and a reservation is refused unless the window's and the day's totals (reserved +
settled) stay within their budgets. The assignment only advises: a request whose reservation is
refused moves down its order or gets a 429. So no interleaving of 200 concurrent requests,
failovers and settlements can overdraw either budget, except by what an upstream reports above
a reservation: that is charged to both budgets at once, so later reservations are refused rather
than spending further, and the upstream rests (below). It bounds real spend as long as usage
stays within the reservation: ``max_tokens``
is forwarded capped, and the default prompt bound, the UTF-8 bytes of the prompt fields plus
:data:`~winnow.route.chat_requests.MESSAGE_OVERHEAD_TOKENS` per message, is an upper bound for
byte-level BPE and SentencePiece (byte-fallback) tokenizers. ``"chars_over_4"`` is tighter but
only an estimate. The ledger lives in one process: serve with one worker
(:func:`winnow.route.server.serve` does).

**Resting upstreams.** Each model has a :class:`~winnow.route.breaker.CircuitBreaker`: after
``breaker_failures`` consecutive failed calls, or one over-reported usage, it rests for
``breaker_cooldown_seconds`` (doubling after each failed trial call): the plan gives it no
capacity and failover skips it. **Waiting.** At most ``max_waiting`` requests queue; more get a
429 ``queue_full``. A request a window cannot place (its budget or capacity went to others)
waits for the next window while the day has room, up to ``max_wait_seconds`` after it arrived;
then it gets a 429. A client that disconnects before its call is dispatched is dropped and never
billed; after dispatch the call completes and is billed. Answers carry
``x-winnow-window-remaining`` and ``x-winnow-day-remaining`` (USD), ``x-winnow-window`` (the
window that placed it) and ``x-winnow-waited-ms`` (its wait for that window to close).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any

import numpy as np

from winnow.common.extras import require
from winnow.route.assign import assign_batch
from winnow.route.breaker import CircuitBreaker
from winnow.route.chat_requests import ChatRequest, is_int
from winnow.route.exceptions import RouteInputError
from winnow.route.ledger import (
    PICODOLLARS_PER_USD,
    BudgetLedger,
    Reservation,
    TokenPrice,
    Window,
    call_cost,
    format_usd,
    pico_to_usd,
    usd_to_pico,
)
from winnow.route.proxy_config import ProxyConfig, QualityModel, Robustness
from winnow.route.robust import assign_budgeted_robust, robust_box

fastapi = require("fastapi", "serve")
httpx = require("httpx", "serve")

__all__ = ["RoutingProxy", "error_response", "plan_window"]

logger = logging.getLogger(__name__)

_PASSED_THROUGH = frozenset({400, 413, 422})
_DISCONNECT_POLL_SECONDS = 0.05
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# -- routing a window -------------------------------------------------------------------------


def plan_window(
    quality: np.ndarray,
    cost: np.ndarray,
    capacity: np.ndarray,
    budget: float,
    time_limit: float | None = None,
    sigma: np.ndarray | None = None,
    robust: Robustness | None = None,
    mip_rel_gap: float = 1e-3,
) -> list[list[int]]:
    """Each request's model order for one window: its assigned model, then fallbacks.

    Parameters
    ----------
    quality : [n, m] float in [0, 1]
        Predicted quality of each model on each request.
    cost : [n, m] float
        Worst-case cost in USD.
    capacity : [m] int
        Free calls per model in this window.
    budget : float
        USD the window may still spend.
    time_limit : float, optional
        Seconds the solver may take; on expiry its best assignment so far is used.
    sigma : [n, m] float >= 0, optional
        The quality estimates' standard errors, read by a robust plan.
    robust : Robustness, optional
        ``box`` plans on ``max(quality - kappa * sigma, 0)``; ``budgeted`` protects against
        ``gamma`` requests taking their worst case (Bertsimas-Sim); none: the nominal plan.
    mip_rel_gap : float
        The plan's relative optimality gap (``assign_batch``'s); a window needs a good plan
        soon more than a proven optimum.

    Returns
    -------
    list of n lists of model indices
        The assigned model first, then the others by quality (higher first, cheaper first on
        ties); an empty list for a request the assignment defers.
    """
    options = {"defer_infeasible": True, "time_limit": time_limit, "mip_rel_gap": mip_rel_gap}
    kind = "none" if robust is None or sigma is None else robust.kind
    if kind == "budgeted":
        assignment = assign_budgeted_robust(
            quality, sigma, cost, capacity, budget, robust.gamma, **options
        )
    else:
        planned = robust_box(quality, sigma, robust.kappa) if kind == "box" else quality
        assignment = assign_batch(planned, cost, capacity, budget, **options)
    orders = []
    for i, choice in enumerate(np.asarray(assignment.choice)):
        if choice < 0:
            orders.append([])
            continue
        ranked = np.lexsort((cost[i], -quality[i]))
        orders.append([int(choice), *(int(j) for j in ranked if j != choice)])
    return orders


def _check_quality(p_hat: np.ndarray, n: int, m: int) -> np.ndarray:
    p_hat = np.asarray(p_hat, dtype=float)
    if p_hat.shape != (n, m) or not np.all((p_hat >= 0) & (p_hat <= 1)):
        raise RouteInputError(
            f"the quality model must return p_hat of shape ({n}, {m}) in [0, 1] for {n} prompts "
            f"and {m} pool models, got shape {p_hat.shape}; fix: predict in pool order"
        )
    return p_hat


@dataclass(frozen=True)
class _Reply:
    """An upstream answer given to the client: a 2xx, or a 4xx about the request itself."""

    status: int
    payload: dict[str, Any]
    usage: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Failure:
    """An upstream call that failed; ``billed``: whether the upstream may have charged it."""

    reason: str
    billed: bool


def _read_reply(response: httpx.Response, charge_failed: bool) -> _Reply | _Failure:
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if status in _PASSED_THROUGH:
        if not isinstance(payload, dict):
            payload = {"error": {"message": response.text[:1000], "type": "upstream_error"}}
        return _Reply(status, payload)
    if not 200 <= status < 300:
        return _Failure(f"HTTP {status}", billed=charge_failed)
    if not isinstance(payload, dict):
        return _Failure("a 2xx answer that is not a JSON object", billed=True)
    return _Reply(status, payload, _usage(payload.get("usage")))


def _usage(usage: object) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if is_int(prompt) and is_int(completion) and prompt >= 0 and completion >= 0:
        return prompt, completion
    return None


@dataclass(eq=False)
class _Pending:
    """One request in the proxy, from queueing to its single answer."""

    request: ChatRequest
    costs: list[int]
    future: asyncio.Future
    window: Window | None = None
    candidates: list[int] = field(default_factory=list)
    crowded_out: bool = False
    dropped: bool = False  # the client left before dispatch: never placed, never billed
    wait_until: float = 0.0  # event-loop time after which it is no longer put back in the queue
    arrived: float = 0.0  # event-loop time it was queued
    waited: float = 0.0  # seconds from arrival until the window that placed it closed

    def answer(self, response: fastapi.responses.JSONResponse) -> None:
        if not self.future.done():
            self.future.set_result(response)


@dataclass
class _Counts:
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
        self.ledger = BudgetLedger(
            usd_to_pico(config.budget_per_window, rounding="down"),
            usd_to_pico(config.budget_per_day, rounding="down"),
            history=config.metrics_history,
        )
        self.counts = _Counts()
        self.in_flight = [0] * len(config.models)
        self.breakers = [
            CircuitBreaker(config.breaker_failures, config.breaker_cooldown_seconds)
            for _ in config.models
        ]
        self._capacity = [model.capacity for model in config.models]
        self._waiting: list[_Pending] = []
        self._plan_seconds: deque[float] = deque(maxlen=1000)  # recent windows' planning time
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self._arrived: asyncio.Event | None = None

    @asynccontextmanager
    async def running(self, client: httpx.AsyncClient) -> AsyncIterator[RoutingProxy]:
        """Run the window loop with ``client`` for upstream calls; on exit, answer everyone."""
        self._client, self._arrived = client, asyncio.Event()
        windows = asyncio.create_task(self._run_windows())
        try:
            yield self
        finally:
            windows.cancel()
            await asyncio.gather(windows, return_exceptions=True)
            self._answer_all(self._waiting, _shutting_down)
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
        allowed = range(len(costs)) if request.model is None else [request.model]
        cheapest = min(costs[j] for j in allowed)
        budget = min(self.ledger.window_budget, self.ledger.day_budget)
        if cheapest > budget:
            raise RouteInputError(
                f"this request may cost up to ${format_usd(cheapest)} ({request.prompt_tokens} "
                f"prompt tokens bound, {request.completion_tokens} completion tokens), more than "
                f"a whole window or day may spend (${format_usd(budget)}); lower max_tokens or n, "
                "or shorten the prompt"
            )
        if self._arrived is None:
            return _shutting_down()
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
        pending = _Pending(request, costs, loop.create_future())
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

    def _drop(self, pending: _Pending) -> None:
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
                self._answer_all(batch, _shutting_down)
                raise
            except Exception:
                logger.exception("routing a window of %d requests failed", len(batch))
                self._answer_all(batch, _routing_failed)

    async def _next_batch(self) -> list[_Pending]:
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

    async def _route(self, batch: list[_Pending]) -> None:
        closed = asyncio.get_running_loop().time()
        for pending in batch:
            pending.waited = closed - pending.arrived
        window = self.ledger.open_window(self.clock().astimezone(timezone.utc).date())
        batch = [p for p in batch if not p.dropped]
        named = [p for p in batch if p.request.model is not None]
        routed = [p for p in batch if p.request.model is None]
        orders = await self._plan(window, named, routed) if routed else []
        if routed:
            self._plan_seconds.append(asyncio.get_running_loop().time() - closed)
        for pending, order in [
            *((p, [p.request.model]) for p in named),
            *zip(routed, orders, strict=True),
        ]:
            if pending.dropped:  # its client left while the window was planned
                continue
            pending.window, pending.candidates = window, order
            self._place(pending)

    async def _plan(
        self, window: Window, named: list[_Pending], routed: list[_Pending]
    ) -> list[list[int]]:
        # Named requests are placed first, so the plan leaves them their slots and money.
        taken = Counter(p.request.model for p in named)
        free = [
            max(0, self._capacity[j] - self.in_flight[j] - taken[j])
            if self.breakers[j].allows_call()
            else 0  # resting after failures: the plan leaves it out
            for j in range(len(self.names))
        ]
        money = self.ledger.available(window) - sum(p.costs[p.request.model] for p in named)
        cost = np.array([p.costs for p in routed], dtype=float) / PICODOLLARS_PER_USD
        prompts = [p.request.prompt for p in routed]

        def plan() -> list[list[int]]:
            p_hat, sigma = self.quality_model.predict(prompts)
            quality = _check_quality(p_hat, len(routed), len(self.names))
            budget = pico_to_usd(max(0, money))
            return plan_window(
                quality, cost, np.array(free), budget, self.config.window_seconds,
                np.asarray(sigma, dtype=float), self.config.robust, self.config.plan_mip_gap,
            )  # fmt: skip

        return await asyncio.to_thread(plan)

    def _place(self, pending: _Pending) -> None:
        claim = self._claim(pending)
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

    def _may_wait(self, pending: _Pending) -> bool:
        """Whether a request this window could not place may wait for the next one: within
        ``max_wait_seconds`` of its arrival, and only while the day still has room for it."""
        if asyncio.get_running_loop().time() >= pending.wait_until:
            return False
        allowed = (
            range(len(self.names)) if pending.request.model is None else [pending.request.model]
        )
        return min(pending.costs[j] for j in allowed) <= self.ledger.remaining(pending.window)[1]

    def _requeue(self, pending: _Pending) -> None:
        """Back to the front of the queue, for the next window's plan."""
        pending.window, pending.candidates, pending.crowded_out = None, [], False
        self.counts.requeued += 1
        self._waiting.insert(0, pending)
        self._arrived.set()

    def _claim(self, pending: _Pending) -> tuple[int, Reservation] | None:
        """Reserve the first model of ``pending``'s order that has a free slot and fits."""
        while pending.candidates:
            model = pending.candidates.pop(0)
            reservation = None
            if self.in_flight[model] < self._capacity[model] and self.breakers[model].allows_call():
                reservation = self.ledger.try_reserve(pending.window, pending.costs[model])
            if reservation is None:
                pending.crowded_out = True
                continue
            self.in_flight[model] += 1
            self.breakers[model].on_dispatch()
            return model, reservation
        return None

    # -- upstream calls ---------------------------------------------------------------------

    async def _forward(self, pending: _Pending, model: int, reservation: Reservation) -> None:
        failures = []
        try:
            while True:
                outcome, charged = await self._attempt(pending, model, reservation)
                name = self.names[model]
                if isinstance(outcome, _Reply):
                    if outcome.status < 300:
                        self.counts.served[name] += 1
                    pending.answer(
                        _relay(outcome, name, charged, pending, self._left(pending.window))
                    )
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
            pending.answer(_shutting_down())
            raise
        except Exception:
            logger.exception("forwarding a request failed")
            pending.answer(_routing_failed())

    async def _attempt(
        self, pending: _Pending, model: int, reservation: Reservation
    ) -> tuple[_Reply | _Failure, int]:
        """One upstream call; its slot and reservation are closed whatever happens."""
        outcome: _Reply | _Failure = _Failure("interrupted", billed=True)
        try:
            outcome = await self._call(pending.request, model)
        finally:
            self.in_flight[model] -= 1
            charged = self._settle(model, reservation, outcome)
        return outcome, charged

    async def _call(self, request: ChatRequest, model: int) -> _Reply | _Failure:
        spec = self.config.models[model]
        headers = {}
        if spec.upstream_api_key is not None:
            headers["Authorization"] = f"Bearer {spec.upstream_api_key.get_secret_value()}"
        body = {**request.body, "model": spec.upstream_model or spec.name}
        try:
            response = await self._client.post(
                f"{spec.base_url}/chat/completions", json=body, headers=headers
            )
        except _UNSENT as exc:
            return _Failure(f"connection failed ({type(exc).__name__})", billed=False)
        except httpx.TransportError as exc:
            return _Failure(f"{type(exc).__name__} after sending", billed=True)
        return _read_reply(response, self.config.charge_failed_requests)

    def _settle(self, model: int, reservation: Reservation, outcome: _Reply | _Failure) -> int:
        """Charge the call; a 2xx or a pass-through 4xx counts as a working upstream."""
        if isinstance(outcome, _Failure):
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
        """Picodollars left in ``window`` and its day (negative past an over-report)."""
        return None if window is None else self.ledger.remaining(window)

    # -- answers ----------------------------------------------------------------------------

    def _unaffordable(self, pending: _Pending, cause: str = "") -> fastapi.responses.JSONResponse:
        """429 saying what is short, today's budget or this window's, and when to retry."""
        window_left, day_left = (max(0, left) for left in self.ledger.remaining(pending.window))
        allowed = (
            range(len(self.names)) if pending.request.model is None else [pending.request.model]
        )
        cheapest = min(pending.costs[j] for j in allowed)
        now = self.clock().astimezone(timezone.utc)
        midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
        if cheapest > day_left:
            retry = math.ceil((midnight - now).total_seconds())
            what = f"the daily budget is spent until it resets at {midnight.isoformat()}"
        else:
            retry = math.ceil(self.config.window_seconds)
            what = "this window's budget and capacity went to other requests; retry next window"
        retry = max(1, retry)
        message = (
            f"{cause}budget exhausted: {what} (this request may cost up to "
            f"${format_usd(cheapest)}; left: ${format_usd(window_left)} of "
            f"${format_usd(self.ledger.window_budget)} in this window, "
            f"${format_usd(day_left)} of ${format_usd(self.ledger.day_budget)} today)"
        )
        return error_response(
            429,
            message,
            "budget_exhausted",
            headers={"Retry-After": str(retry), **_left_headers((window_left, day_left))},
            retry_after_seconds=retry,
            day_resets_at=midnight.isoformat(),
        )

    def _exhausted(self, pending: _Pending, failures: list[str]) -> fastapi.responses.JSONResponse:
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
        self, batch: list[_Pending], respond: Callable[[], fastapi.responses.JSONResponse]
    ) -> None:
        for pending in batch:
            pending.answer(respond())

    def metrics(self) -> dict[str, Any]:
        """The ``/metrics`` document: request and per-model counts, and the ledger in USD."""
        counts = self.counts
        return {
            "requests": {
                "responses": {str(k): v for k, v in sorted(counts.responses.items())},
                "deferred": counts.deferred,
                "rejected": counts.rejected,
                "fallbacks": counts.fallbacks,
                "usage_anomalies": counts.usage_anomalies,
                "usage_over_reservation": counts.usage_over_reservation,
                "disconnected_before_dispatch": counts.disconnected,
                "queue_full": counts.queue_full,
                "requeued_for_next_window": counts.requeued,
                "waiting": len(self._waiting),
                "plan_ms": _percentiles_ms(self._plan_seconds),
            },
            "models": {
                name: {
                    "assigned": counts.assigned[name],
                    "served": counts.served[name],
                    "errors": counts.errors[name],
                    "in_flight": self.in_flight[j],
                    "capacity": self._capacity[j],
                    "breaker": self.breakers[j].state,
                    "breaker_trips": self.breakers[j].trips,
                    "rest_seconds_left": round(self.breakers[j].seconds_left(), 3),
                }
                for j, name in enumerate(self.names)
            },
            "today": self.clock().astimezone(timezone.utc).date().isoformat(),
            "budget": self.ledger.report(),
        }


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None, **details: Any
) -> fastapi.responses.JSONResponse:
    """An OpenAI-style error body ``{"error": {"message", "type", ...}}``."""
    error = {"message": message, "type": kind, "param": None, "code": None, **details}
    return fastapi.responses.JSONResponse({"error": error}, status_code=status, headers=headers)


def _percentiles_ms(seconds) -> dict[str, float | None]:
    """p50 and p99 of recent planning times (quality model and MILP of one window), in ms."""
    if not seconds:
        return {"p50": None, "p99": None, "windows": 0}
    values = 1000 * np.asarray(seconds)
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "windows": len(values)}


def _left_headers(left: tuple[int, int] | None) -> dict[str, str]:
    """``x-winnow-window-remaining`` and ``x-winnow-day-remaining`` (USD, never below 0)."""
    if left is None:
        return {}
    window, day = (format_usd(max(0, amount)) for amount in left)
    return {"x-winnow-window-remaining": window, "x-winnow-day-remaining": day}


def _shutting_down() -> fastapi.responses.JSONResponse:
    return error_response(503, "the proxy is shutting down; retry shortly", "unavailable")


def _routing_failed() -> fastapi.responses.JSONResponse:
    return error_response(500, "routing this request failed; see the proxy's log", "internal")


def _relay(
    reply: _Reply, name: str, charged: int, pending: _Pending, left: tuple[int, int] | None
) -> fastapi.responses.JSONResponse:
    """The upstream's answer with the model, the charge, the window that placed it, the time it
    waited for that window to close (what batching costs; the rest of its latency is the
    proxy's and the upstream's) and the budget left."""
    payload = {**reply.payload, "model": name} if reply.status < 300 else reply.payload
    headers = {
        "x-winnow-model": name,
        "x-winnow-cost": format_usd(charged),
        "x-winnow-window": str(pending.window.index),
        "x-winnow-waited-ms": f"{1000 * pending.waited:.3f}",
        **_left_headers(left),
    }
    return fastapi.responses.JSONResponse(payload, status_code=reply.status, headers=headers)
