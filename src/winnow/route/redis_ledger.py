"""The budget ledger shared by proxy replicas through Redis (or Valkey): one budget, N processes.

:class:`~winnow.route.ledger.BudgetLedger` keeps its totals in one process, so N replicas behind
a load balancer could each spend the whole day budget. Here the totals live in Redis and every
change is one Lua script, which Redis runs atomically (no other command runs in between), so
"check that it fits, then reserve" cannot interleave across replicas. Amounts are integer
picodollars, as in the in-process ledger.

Keys, under ``key_prefix`` (``P``):

- ``P:day:<YYYY-MM-DD>`` hash ``reserved``, ``settled``: the UTC day's totals, shared by all;
- ``P:window:<replica>:<n>`` hash ``reserved``, ``settled``: one routed batch of one replica;
- ``P:res:<id>`` hash ``amount``, ``window``, ``day``: an open reservation;
- ``P:open`` sorted set, reservation id scored by its expiry (Redis's clock, ms);
- ``P:inflight:<model>`` sorted set, call id scored by its expiry: calls in flight per model;
- ``P:ids`` counter of reservation ids.

A replica that crashes holds reservations it will never settle. Each reservation therefore
expires ``reservation_ttl_seconds`` after it was made (longer than any upstream call may take):
the next script to run on the ledger settles every expired reservation at its full amount (the
proxy cannot know what the upstream billed for a call whose replica died, so it assumes the
worst) and frees its in-flight slot. A settle that arrives after its reservation expired
finds it closed and is counted, not charged twice.

The capacity of a model is shared the same way: :meth:`RedisLedger.try_claim` takes an in-flight
slot and reserves the call's worst case in one script, so N replicas never have more calls in
flight on a model than its capacity, nor more money held than the budgets.

Lua adds in doubles, so a budget may be at most 2**53 picodollars (about $9,007 a day); a larger
one is refused at construction rather than rounded. The scripts name keys that are built inside
them, so the ledger needs one Redis or Valkey instance (or a primary with replicas), not Cluster.

Redis being unreachable raises :class:`LedgerUnavailableError`: at start-up the proxy refuses to
start, in service it answers 503 (never an unaccounted call).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from winnow.common.extras import require
from winnow.route.exceptions import RouteInputError
from winnow.route.ledger import BudgetLedger, Ledger, pico_to_usd, usd_to_pico

__all__ = [
    "LedgerUnavailableError",
    "RedisLedger",
    "RedisReservation",
    "RedisWindow",
    "make_ledger",
]

# Lua numbers are doubles: sums of picodollars stay exact up to 2**53 (about $9,007).
_LUA_EXACT = 2**53

# Settles every expired reservation at its full amount; shared by every script below.
# KEYS: none besides the prefix in ARGV[1]. Returns the number settled.
_SWEEP = """
local function sweep(prefix, now)
  local expired = redis.call('ZRANGEBYSCORE', prefix .. ':open', '-inf', now)
  for _, id in ipairs(expired) do
    local key = prefix .. ':res:' .. id
    local amount = tonumber(redis.call('HGET', key, 'amount') or '0')
    for _, total in ipairs({redis.call('HGET', key, 'window'), redis.call('HGET', key, 'day')}) do
      if total then
        redis.call('HINCRBY', total, 'reserved', -amount)
        redis.call('HINCRBY', total, 'settled', amount)
      end
    end
    local model = redis.call('HGET', key, 'model')
    if model then redis.call('ZREM', prefix .. ':inflight:' .. model, id) end
    redis.call('DEL', key)
    redis.call('ZREM', prefix .. ':open', id)
    redis.call('INCRBY', prefix .. ':expired', amount)
  end
  return #expired
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function total(key)
  local v = redis.call('HMGET', key, 'reserved', 'settled')
  return tonumber(v[1] or '0') + tonumber(v[2] or '0')
end
"""

# ARGV: prefix, window key, day key, window budget, day budget, amount, ttl ms, model or '',
# model capacity (or -1). Returns {id, 0} on success, {0, reason}: 1 money, 2 capacity.
_CLAIM = (
    _SWEEP
    + """
local prefix, window, day = ARGV[1], ARGV[2], ARGV[3]
local window_budget, day_budget, amount = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, model, capacity = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local now = now_ms()
sweep(prefix, now)
if model ~= '' and redis.call('ZCARD', prefix .. ':inflight:' .. model) >= capacity then
  return {0, 2}
end
if total(window) + amount > window_budget or total(day) + amount > day_budget then
  return {0, 1}
end
local id = redis.call('INCR', prefix .. ':ids')
local key = prefix .. ':res:' .. id
redis.call('HSET', key, 'amount', amount, 'window', window, 'day', day)
if model ~= '' then
  redis.call('HSET', key, 'model', model)
  redis.call('ZADD', prefix .. ':inflight:' .. model, now + ttl, id)
end
redis.call('ZADD', prefix .. ':open', now + ttl, id)
redis.call('HINCRBY', window, 'reserved', amount)
redis.call('HINCRBY', day, 'reserved', amount)
redis.call('SADD', prefix .. ':days', day)
return {id, 0}
"""
)

# ARGV: prefix, id, actual. Returns the amount charged, or -1 when the reservation had
# expired (settled at its full amount by a sweep) or was closed already.
_SETTLE = (
    _SWEEP
    + """
local prefix, id, actual = ARGV[1], ARGV[2], tonumber(ARGV[3])
sweep(prefix, now_ms())
local key = prefix .. ':res:' .. id
if redis.call('EXISTS', key) == 0 then
  redis.call('INCR', prefix .. ':late_settles')
  return -1
end
local amount = tonumber(redis.call('HGET', key, 'amount'))
for _, t in ipairs({redis.call('HGET', key, 'window'), redis.call('HGET', key, 'day')}) do
  redis.call('HINCRBY', t, 'reserved', -amount)
  redis.call('HINCRBY', t, 'settled', actual)
end
if actual > amount then redis.call('INCRBY', prefix .. ':overage', actual - amount) end
local model = redis.call('HGET', key, 'model')
if model then redis.call('ZREM', prefix .. ':inflight:' .. model, id) end
redis.call('DEL', key)
redis.call('ZREM', prefix .. ':open', id)
return actual
"""
)

# ARGV: prefix, window key, day key. Returns {window total, day total} after a sweep.
_TOTALS = (
    _SWEEP
    + """
sweep(ARGV[1], now_ms())
return {total(ARGV[2]), total(ARGV[3])}
"""
)


class LedgerUnavailableError(RouteInputError):
    """Redis could not be reached or answered with an error: nothing was reserved."""


@dataclass(frozen=True)
class RedisWindow:
    """One routed batch of this replica: the Redis keys of its totals and of its day's."""

    index: int
    day: date
    key: str
    day_key: str


@dataclass(frozen=True)
class RedisReservation:
    """An amount held in Redis under ``id`` until settled, released or expired."""

    id: int
    window: RedisWindow
    amount: int


class RedisLedger:
    """:class:`~winnow.route.ledger.BudgetLedger`'s interface over Redis, for N replicas.

    Parameters
    ----------
    url : str
        ``redis://host:port/db`` (``rediss://`` for TLS), as redis-py reads it.
    window_budget, day_budget : int
        Picodollars, ``> 0``; the day budget is shared by every replica using ``key_prefix``,
        the window budget holds per routed batch of each replica.
    key_prefix : str
        Namespace of this deployment's keys: replicas that share a budget share the prefix.
    reservation_ttl_seconds : float
        How long a reservation lives unsettled; set it above the longest upstream call.

    Raises :class:`LedgerUnavailableError` when Redis does not answer a PING at construction.
    """

    def __init__(
        self,
        url: str,
        window_budget: int,
        day_budget: int,
        *,
        key_prefix: str = "winnow",
        reservation_ttl_seconds: float = 120.0,
        socket_timeout: float = 2.0,
    ) -> None:
        redis = require("redis", "serve")
        for name, value in (("window_budget", window_budget), ("day_budget", day_budget)):
            if not 0 < value <= _LUA_EXACT:
                raise RouteInputError(
                    f"{name} must be > 0 and at most {_LUA_EXACT} picodollars (about $9,007: "
                    f"Redis's Lua adds in doubles), got {value!r}; fix: split the budget "
                    "across key prefixes, or use the local ledger"
                )
        if reservation_ttl_seconds <= 0:
            raise RouteInputError(
                f"reservation_ttl_seconds must be > 0, got {reservation_ttl_seconds!r}"
            )
        self.window_budget, self.day_budget = window_budget, day_budget
        self.prefix, self.url = key_prefix, url
        self.ttl_ms = int(reservation_ttl_seconds * 1000)
        self.replica = uuid.uuid4().hex[:12]
        self.windows_opened = 0
        self._errors = (redis.exceptions.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._claim = self._client.register_script(_CLAIM)
        self._settle = self._client.register_script(_SETTLE)
        self._totals = self._client.register_script(_TOTALS)
        self._call(self._client.ping)

    def open_window(self, day: date) -> RedisWindow:
        """Start a routed batch of this replica in UTC ``day`` (no Redis call yet)."""
        window = RedisWindow(
            self.windows_opened,
            day,
            f"{self.prefix}:window:{self.replica}:{self.windows_opened}",
            f"{self.prefix}:day:{day.isoformat()}",
        )
        self.windows_opened += 1
        return window

    def remaining(self, window: RedisWindow) -> tuple[int, int]:
        """What is left of ``window``'s budget and of its day's, after expired reservations."""
        window_total, day_total = self._call(
            self._totals, args=[self.prefix, window.key, window.day_key]
        )
        return self.window_budget - int(window_total), self.day_budget - int(day_total)

    def available(self, window: RedisWindow) -> int:
        """The largest amount :meth:`try_reserve` would accept now in ``window``."""
        return min(self.remaining(window))

    def try_reserve(self, window: RedisWindow, amount: int) -> RedisReservation | None:
        """Hold ``amount`` in ``window`` and its day, or ``None`` when it does not fit."""
        return self.try_claim(window, amount)[0]

    def try_claim(
        self, window: RedisWindow, amount: int, model: str | None = None, capacity: int = 0
    ) -> tuple[RedisReservation | None, str | None]:
        """Reserve ``amount`` and, with ``model``, one of its ``capacity`` in-flight slots, in
        one atomic step. Returns ``(reservation, None)``, or ``(None, "money" | "capacity")``."""
        if amount < 0:
            raise RouteInputError(f"amount must be >= 0 picodollars, got {amount!r}")
        args = [
            self.prefix, window.key, window.day_key, self.window_budget, self.day_budget,
            amount, self.ttl_ms, model or "", capacity if model else -1,
        ]  # fmt: skip
        reservation_id, reason = self._call(self._claim, args=args)
        if reason:
            return None, {1: "money", 2: "capacity"}[int(reason)]
        return RedisReservation(int(reservation_id), window, amount), None

    def settle(self, reservation: RedisReservation, actual: int) -> int:
        """Close ``reservation`` charging ``actual``; returns the charge. A reservation that
        expired first was charged its full amount then, which is returned instead."""
        if actual < 0:
            raise RouteInputError(f"actual cost must be >= 0 picodollars, got {actual!r}")
        charged = int(self._call(self._settle, args=[self.prefix, reservation.id, actual]))
        return reservation.amount if charged < 0 else charged

    def release(self, reservation: RedisReservation) -> None:
        """Close ``reservation`` without charge (the call was never billed)."""
        self.settle(reservation, 0)

    def in_flight(self, models: list[str]) -> list[int]:
        """Calls in flight on each of ``models`` across every replica (expired ones excluded
        once a script has swept them)."""
        pipe = self._client.pipeline()
        for model in models:
            pipe.zcard(f"{self.prefix}:inflight:{model}")
        return [int(count) for count in self._call(pipe.execute)]

    def report(self) -> dict[str, Any]:
        """JSON-ready state in USD: budgets, the shared days' totals and the expiry counters."""

        def read() -> dict[str, Any]:
            days = sorted(d.decode() for d in self._client.smembers(f"{self.prefix}:days"))
            totals = [self._client.hgetall(day) for day in days]
            counters = self._client.mget(
                [f"{self.prefix}:{name}" for name in ("overage", "expired", "late_settles")]
            )
            return {
                "backend": "redis",
                "window_budget_usd": pico_to_usd(self.window_budget),
                "day_budget_usd": pico_to_usd(self.day_budget),
                "windows_opened_here": self.windows_opened,
                "open_reservations": self._client.zcard(f"{self.prefix}:open"),
                "overage_usd": pico_to_usd(int(counters[0] or 0)),
                "expired_usd": pico_to_usd(int(counters[1] or 0)),
                "late_settles": int(counters[2] or 0),
                "days": [
                    {
                        "day": day.rsplit(":", 1)[-1],
                        "reserved_usd": pico_to_usd(int(t.get(b"reserved", 0))),
                        "settled_usd": pico_to_usd(int(t.get(b"settled", 0))),
                    }
                    for day, t in zip(days, totals, strict=True)
                ],
            }

        return self._call(read)

    def _call(self, function, **kwargs):
        try:
            return function(**kwargs)
        except self._errors as exc:
            raise LedgerUnavailableError(
                f"the shared ledger at {self.url} did not answer ({type(exc).__name__}: {exc}); "
                "nothing was reserved. Fix: start Redis there, or set proxy.ledger.backend: local "
                "for a single replica"
            ) from None


def make_ledger(config) -> Ledger:
    """The ledger a :class:`~winnow.route.proxy_config.ProxyConfig` asks for (``ledger.backend``);
    a Redis ledger that cannot reach its server refuses to start."""
    window = usd_to_pico(config.budget_per_window, rounding="down")
    day = usd_to_pico(config.budget_per_day, rounding="down")
    if config.ledger.backend == "local":
        return BudgetLedger(window, day, history=config.metrics_history)
    ttl = config.ledger.reservation_ttl_seconds or 2 * config.upstream_timeout_seconds + 30
    return RedisLedger(
        config.ledger.url,
        window,
        day,
        key_prefix=config.ledger.key_prefix,
        reservation_ttl_seconds=ttl,
    )
