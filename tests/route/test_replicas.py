"""Two proxy replicas sharing one Redis ledger (issue 21): together they never pass the day's
budget nor a model's capacity, every request is answered once, and a ledger that goes away
answers 503 instead of serving unaccounted."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from decimal import Decimal

import fastapi
import httpx
import pytest

from tests.route.test_server import AUTH, LoopbackServer, pool_config, quality_for
from winnow.route.local_redis import redis_server
from winnow.route.redis_ledger import LedgerUnavailableError
from winnow.route.server import create_app

CHEAP_CAPACITY = 3


def counting_upstream(seconds: float) -> fastapi.FastAPI:
    """An upstream that answers after ``seconds`` and records its peak of concurrent calls."""
    app = fastapi.FastAPI()
    app.state.active = app.state.peak = 0
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    async def complete(request: fastapi.Request):
        body = await request.json()
        with lock:
            app.state.active += 1
            app.state.peak = max(app.state.peak, app.state.active)
        try:
            await asyncio.sleep(seconds)
        finally:
            with lock:
                app.state.active -= 1
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 16, "total_tokens": 36},
        }  # fmt: skip

    return app


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


def shared_config(urls: dict[str, str], redis_url: str, prefix: str, **overrides):
    ledger = {"backend": "redis", "url": redis_url, "key_prefix": prefix}
    config = pool_config(urls, ledger=ledger, **overrides)
    models = [
        m.model_copy(update={"capacity": CHEAP_CAPACITY}) if m.name == "cheap" else m
        for m in config.models
    ]
    return config.model_copy(update={"models": models})


async def send(urls: list[str], count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(headers=AUTH, timeout=30, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            body = {"messages": [{"role": "user", "content": f"question {i}"}]}
            return await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body)

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_two_replicas_share_the_day_budget_and_the_capacity(redis_url):
    with LoopbackServer(counting_upstream(0.05)) as upstream:
        # Only 'cheap' is in the pool: every request needs one of its 3 shared slots.
        config = shared_config({"cheap": upstream.url}, redis_url, "two", budget_per_day=1e-4)
        with (
            LoopbackServer(create_app(config, quality_for(config))) as first,
            LoopbackServer(create_app(config, quality_for(config))) as second,
        ):
            answers = asyncio.run(send([first.url, second.url], 80))
            report = httpx.get(f"{first.url}/metrics", headers=AUTH, timeout=5).json()["budget"]
        peak = upstream.app.state.peak
    statuses = sorted({a.status_code for a in answers})
    assert len(answers) == 80 and statuses == [200, 429]  # some served, some over budget
    charged = sum(Decimal(a.headers["x-winnow-cost"]) for a in answers if a.status_code == 200)
    (today,) = report["days"]
    assert report["backend"] == "redis" and report["open_reservations"] == 0
    assert float(charged) <= today["settled_usd"] + 1e-15 <= config.budget_per_day + 1e-15
    assert peak <= CHEAP_CAPACITY  # together, never more calls in flight than the model takes


def test_a_replica_refuses_to_start_without_its_ledger(redis_url):
    config = shared_config({"cheap": "http://127.0.0.1:9"}, "redis://127.0.0.1:9/0", "gone")
    with pytest.raises(LedgerUnavailableError, match="did not answer"):
        create_app(config, quality_for(config))


def test_a_ledger_lost_in_service_answers_503():
    with LoopbackServer(counting_upstream(0.0)) as upstream, ExitStack() as stack:
        with redis_server() as url:
            config = shared_config({"cheap": upstream.url}, url, "lost")
            proxy = stack.enter_context(LoopbackServer(create_app(config, quality_for(config))))
            served = asyncio.run(send([proxy.url], 1))
        lost = asyncio.run(send([proxy.url], 3))  # the Redis server has stopped
    assert served[0].status_code == 200
    assert [a.status_code for a in lost] == [503, 503, 503]
    assert "nothing was sent" in lost[0].json()["error"]["message"]


def test_a_call_whose_settlement_finds_no_ledger_is_still_answered():
    with LoopbackServer(counting_upstream(1.0)) as upstream, ExitStack() as stack:
        with redis_server() as url:
            config = shared_config({"cheap": upstream.url}, url, "mid-call")
            proxy = stack.enter_context(LoopbackServer(create_app(config, quality_for(config))))
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            answer = pool.submit(lambda: asyncio.run(send([proxy.url], 1)))
            deadline = time.monotonic() + 10
            while upstream.app.state.active == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert upstream.app.state.active == 1  # the call is in flight
        (reply,) = answer.result(timeout=30)  # Redis stopped before it could be settled
    assert reply.status_code == 200 and reply.json()["model"] == "cheap"
