"""Tests of winnow.route.ledger, proxy_config, chat_requests and server.

The ledger and the request parsing are tested as pure code. The proxy runs under uvicorn on
127.0.0.1 in front of real upstream servers, also uvicorn on 127.0.0.1: one that answers, one
that always fails (500), one too slow for the proxy's timeout, one that reports more tokens than
it was allowed. Every request loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.route import upstream
from winnow.route.chat_requests import MESSAGE_OVERHEAD_TOKENS, parse_chat_request
from winnow.route.exceptions import RouteInputError
from winnow.route.ledger import (
    BudgetLedger,
    TokenPrice,
    call_cost,
    format_usd,
    pico_to_usd,
    usd_to_pico,
)
from winnow.route.proxy_config import ConstantQuality, ProxyConfig, QualityModel, Robustness
from winnow.route.server import create_app
from winnow.route.window_plan import plan_window

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
CAP = 32  # max_tokens_cap of every proxy here
UPSTREAM_PROMPT_TOKENS = 20
# Generous for a loaded 2-core machine, where a connect can take a few hundred ms; the slow
# upstream answers well after it.
TIMEOUT, SLOW_SECONDS = 2.0, 5.0
LAG_SECONDS = 0.3


# -- ledger -----------------------------------------------------------------------------------


def test_usd_conversions_are_exact_and_round_against_the_spender():
    assert usd_to_pico(1.5e-7, rounding="up") == 150_000
    assert usd_to_pico(0.1, rounding="down") == 10**11
    assert usd_to_pico(1e-13, rounding="up") == 1
    assert usd_to_pico(1e-13, rounding="down") == 0
    assert format_usd(1_500_000) == "0.000001500000"
    assert format_usd(2 * 10**12 + 5) == "2.000000000005"
    assert pico_to_usd(250_000) == pytest.approx(2.5e-7)
    assert call_cost(10, 3, TokenPrice.from_usd(1e-6, 2e-6)) == 10 * 10**6 + 3 * 2 * 10**6
    with pytest.raises(RouteInputError, match=">= 0"):
        usd_to_pico(-1.0, rounding="up")


def test_ledger_reserve_settle_release_arithmetic():
    ledger = BudgetLedger(window_budget=100, day_budget=150)
    window = ledger.open_window(date(2024, 1, 1))
    first = ledger.try_reserve(window, 80)
    assert ledger.remaining(window) == (20, 70)
    assert ledger.try_reserve(window, 21) is None  # over the window budget
    assert ledger.settle(first, 25) == 25  # 55 of the 80 come back
    assert ledger.remaining(window) == (75, 125)
    second = ledger.try_reserve(window, 75)
    assert ledger.available(window) == 0
    ledger.release(second)
    assert ledger.remaining(window) == (75, 125)
    # A second window of the same day shares the day budget.
    other = ledger.open_window(date(2024, 1, 1))
    assert ledger.remaining(other) == (100, 125)
    assert ledger.try_reserve(other, 100) is not None
    assert ledger.try_reserve(other, 0) is not None
    assert ledger.available(window) == 25  # the day has 25 left, the window 75
    assert ledger.try_reserve(window, 26) is None
    assert ledger.peak_window == 100 and ledger.peak_day == 125


def test_ledger_charges_usage_above_a_reservation_and_then_refuses_until_there_is_room():
    ledger = BudgetLedger(window_budget=100, day_budget=100)
    window = ledger.open_window(date(2024, 1, 1))
    reservation = ledger.try_reserve(window, 40)
    assert ledger.settle(reservation, 130) == 130  # really spent: charged as reported
    assert window.spend.settled == 130 and window.spend.reserved == 0
    assert ledger.overage == 90 and ledger.peak_window == 130
    assert ledger.try_reserve(window, 1) is None  # the window is over its budget
    assert ledger.try_reserve(ledger.open_window(date(2024, 1, 1)), 1) is None  # and the day
    assert ledger.report()["overage_usd"] == pytest.approx(90e-12)
    with pytest.raises(RouteInputError, match="exactly once"):
        ledger.settle(reservation, 10)
    with pytest.raises(RouteInputError, match="exactly once"):
        ledger.release(reservation)
    with pytest.raises(RouteInputError, match=">= 0"):
        ledger.try_reserve(window, -1)
    with pytest.raises(RouteInputError, match="window_budget"):
        BudgetLedger(window_budget=0, day_budget=1)


def test_ledger_new_day_restores_the_budget_and_old_reservations_settle_in_their_day():
    ledger = BudgetLedger(window_budget=100, day_budget=100, history=2)
    late = ledger.open_window(date(2024, 1, 1))
    held = ledger.try_reserve(late, 100)
    assert ledger.try_reserve(ledger.open_window(date(2024, 1, 1)), 1) is None
    fresh = ledger.open_window(date(2024, 1, 2))
    assert ledger.available(fresh) == 100
    ledger.open_window(date(2024, 1, 3))  # history=2 forgets the first window from the report
    ledger.settle(held, 30)
    assert late.day_spend.settled == 30 and late.day_spend.reserved == 0
    report = ledger.report()
    assert [window["index"] for window in report["windows"]] == [2, 3]
    assert [day["day"] for day in report["days"]] == ["2024-01-02", "2024-01-03"]
    assert report["open_reservations"] == 0 and report["peak_day_usd"] == pytest.approx(1e-10)


def test_ledger_random_operations_never_go_negative_or_over_budget_but_for_reported_excess():
    rng = np.random.default_rng(0)
    ledger = BudgetLedger(window_budget=1_000, day_budget=3_000, history=5)
    windows, open_reservations = [], []
    day = date(2024, 1, 1)
    for _ in range(3_000):
        op = rng.integers(4)
        if op == 0 or not windows:
            day += timedelta(days=int(rng.random() < 0.1))
            windows.append(ledger.open_window(day))
        elif op == 1:
            reservation = ledger.try_reserve(windows[rng.integers(len(windows))], rng.integers(400))
            if reservation is not None:
                open_reservations.append(reservation)
        elif open_reservations:
            reservation = open_reservations.pop(rng.integers(len(open_reservations)))
            ledger.settle(reservation, int(rng.integers(2 * reservation.amount + 1)))
        for window in windows[-10:]:
            for spend, budget in ((window.spend, 1_000), (window.day_spend, 3_000)):
                assert spend.reserved >= 0 and spend.settled >= 0
                assert spend.total <= budget + ledger.overage  # only reported excess passes it
    for reservation in open_reservations:
        ledger.release(reservation)
    assert all(w.spend.reserved == 0 and w.day_spend.reserved == 0 for w in windows)
    assert ledger.overage > 0  # some settlements were above their reservation
    assert (
        ledger.peak_window <= 1_000 + ledger.overage and ledger.peak_day <= 3_000 + ledger.overage
    )


def test_ledger_is_never_overdrawn_by_threads():
    ledger = BudgetLedger(window_budget=10_000, day_budget=10_000)
    window = ledger.open_window(date(2024, 1, 1))

    def spend(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            reservation = ledger.try_reserve(window, int(rng.integers(1, 500)))
            if reservation is not None:
                ledger.settle(reservation, int(rng.integers(reservation.amount + 1)))

    threads = [threading.Thread(target=spend, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert ledger.peak_window <= 10_000
    assert window.spend.reserved == 0 and 0 < window.spend.settled <= 10_000


# -- pure pieces of the server ----------------------------------------------------------------


def pool_config(urls: dict[str, str], **overrides) -> ProxyConfig:
    """Four models: 'flaky' (best predicted), 'slow', 'strong', 'cheap'; USD per token."""
    prices = {"flaky": (1e-6, 2e-6), "slow": (1e-6, 2e-6), "strong": (2e-6, 4e-6)}
    capacity = {"flaky": 16, "slow": 4, "strong": 16, "cheap": 64}
    models = [
        {
            "name": name,
            "base_url": f"{urls[name]}/v1",
            "input_price_per_token": prices.get(name, (1e-7, 2e-7))[0],
            "output_price_per_token": prices.get(name, (1e-7, 2e-7))[1],
            "capacity": capacity[name],
        }
        for name in ("flaky", "slow", "strong", "cheap")
        if name in urls
    ]
    settings = {
        "models": models,
        "api_keys": [KEY],
        "budget_per_window": 2e-3,
        "budget_per_day": 6e-3,
        "window_seconds": 0.05,
        "max_batch": 32,
        "max_request_bytes": 4096,
        "max_tokens_cap": CAP,
        "upstream_timeout_seconds": TIMEOUT,
    }
    return ProxyConfig(**{**settings, **overrides})


QUALITY = {"flaky": 0.95, "slow": 0.9, "strong": 0.8, "cheap": 0.5}

LOCAL = {name: "http://127.0.0.1:9" for name in QUALITY}


def quality_for(config: ProxyConfig) -> ConstantQuality:
    return ConstantQuality([QUALITY[m.name] for m in config.models])


def test_parse_sets_the_completion_limit_and_bounds_the_prompt():
    config = pool_config(LOCAL)
    messages = [{"role": "user", "content": "héllo"}]
    request = parse_chat_request(json.dumps({"messages": messages}).encode(), config)
    prompt_bytes = len(json.dumps([messages], ensure_ascii=False).encode())
    assert request.body["max_tokens"] == CAP and "model" not in request.body
    assert request.prompt == "héllo" and request.model is None
    assert request.prompt_tokens == prompt_bytes + 2 * MESSAGE_OVERHEAD_TOKENS
    assert request.completion_tokens == CAP

    body = {"model": "strong", "messages": messages, "max_completion_tokens": 999, "n": 3}
    request = parse_chat_request(json.dumps(body).encode(), config)
    assert request.body["max_completion_tokens"] == CAP and "max_tokens" not in request.body
    assert request.completion_tokens == 3 * CAP and request.model == 2

    quarter = config.model_copy(update={"prompt_token_bound": "chars_over_4"})
    request = parse_chat_request(
        json.dumps({"messages": messages, "max_tokens": 5}).encode(), quarter
    )
    assert request.prompt_tokens == -(-len(json.dumps([messages], ensure_ascii=False)) // 4) + 16
    assert request.body["max_tokens"] == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "streaming"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}, "flaky, slow"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"content": "x"}]}, "'role'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "'n'"),
        ([1, 2], "JSON object"),
    ],
)
def test_parse_rejects_bad_requests_naming_the_fix(body, message):
    with pytest.raises(RouteInputError, match=message):
        parse_chat_request(json.dumps(body).encode(), pool_config(LOCAL))


@pytest.mark.parametrize(
    ("model", "key", "value", "message"),
    [
        (0, "name", "cheap", "distinct names"),
        (1, "name", "auto", "distinct names"),
        (0, "base_url", "ftp://x", "models.0.base_url"),
        (0, "capacity", 0, "models.0.capacity"),
        (None, "window_seconds", 10, "window_seconds"),
        (None, "api_keys", [], "api_keys"),
        (None, "budget_per_day", 0, "budget_per_day"),
    ],
)
def test_config_errors_name_the_field(model, key, value, message):
    settings = pool_config(LOCAL).model_dump(mode="json")
    settings["api_keys"] = [KEY]  # dumps mask secrets
    assert load_config(ProxyConfig, settings).api_keys[0].get_secret_value() == KEY
    (settings if model is None else settings["models"][model])[key] = value
    with pytest.raises(ConfigError, match=message):
        load_config(ProxyConfig, settings)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["change-me"], "key 0 is a placeholder"),
        ([KEY, "short-key"], "key 1 has 9 characters, fewer than 16"),
        ([""], "key 0 has 0 characters"),
    ],
)
def test_guessable_client_keys_are_refused_without_echoing_them(keys, message):
    settings = pool_config(LOCAL).model_dump(mode="json") | {"api_keys": keys}
    with pytest.raises(ConfigError, match=message) as error:
        load_config(ProxyConfig, settings)
    assert "token_urlsafe" in str(error.value)
    assert all(key not in str(error.value) for key in keys if key)


def test_keys_come_from_the_environment_and_never_reach_an_error(monkeypatch):
    secret = "sk-upstream-secret-value-123"
    monkeypatch.setenv("TEST_PROXY_KEYS", f"{KEY}, {KEY}-second")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", secret)
    settings = pool_config(LOCAL).model_dump(mode="json")
    settings.pop("api_keys")
    settings["api_keys_env"] = "TEST_PROXY_KEYS"
    settings["models"][0] |= {"upstream_api_key": None, "upstream_api_key_env": "TEST_UPSTREAM_KEY"}
    config = load_config(ProxyConfig, settings)
    assert [key.get_secret_value() for key in config.api_keys] == [KEY, f"{KEY}-second"]
    assert config.models[0].upstream_api_key.get_secret_value() == secret
    assert secret not in repr(config) and secret not in config.model_dump_json()
    # A config error on the model block shows its fields, but no key, at any depth.
    settings["models"][0] |= {"upstream_api_key": secret, "upstream_api_key_env": None}
    del settings["models"][0]["capacity"]
    with pytest.raises(ConfigError, match="capacity") as error:
        load_config(ProxyConfig, settings)
    assert secret not in str(error.value) and "'upstream_api_key': '***'" in str(error.value)
    monkeypatch.delenv("TEST_PROXY_KEYS")
    with pytest.raises(ConfigError, match="TEST_PROXY_KEYS is not set"):
        load_config(ProxyConfig, {**settings, "models": pool_config(LOCAL).model_dump()["models"]})


def test_constant_quality_repeats_the_prior():
    model = ConstantQuality([0.9, 0.5])
    assert isinstance(model, QualityModel)
    p_hat, sigma = model.predict(["a", "b", "c"])
    assert p_hat.shape == sigma.shape == (3, 2)
    assert np.all(p_hat == [0.9, 0.5]) and np.all(sigma == 0)
    with pytest.raises(RouteInputError, match=r"\[0, 1\]"):
        ConstantQuality([1.5])


def test_plan_window_orders_fallbacks_by_quality_and_defers_what_does_not_fit():
    quality = np.array([[0.9, 0.6, 0.6], [0.9, 0.6, 0.6], [0.9, 0.6, 0.6]])
    cost = np.array([[3.0, 2.0, 1.0]] * 3)
    orders = plan_window(quality, cost, np.array([1, 3, 3]), budget=100.0).orders
    assert sorted(order[0] for order in orders).count(0) == 1  # model 0 has one free slot
    for order in orders:
        assert sorted(order) == [0, 1, 2]
        assert [j for j in order if j != order[0]] == [j for j in (0, 2, 1) if j != order[0]]
    assert plan_window(quality, cost, np.array([1, 3, 3]), budget=0.5).orders == [[], [], []]


def test_plan_window_robust_plans_read_sigma():
    # Model 0 looks better but is uncertain; model 1 is slightly worse and sure.
    quality = np.array([[0.8, 0.75]] * 2)
    sigma = np.array([[0.3, 0.0]] * 2)
    cost, capacity = np.zeros((2, 2)), np.array([2, 2])
    nominal = plan_window(quality, cost, capacity, 1.0, sigma=sigma)
    box = plan_window(quality, cost, capacity, 1.0, sigma=sigma, robust=Robustness(kind="box"))
    budgeted = plan_window(
        quality, cost, capacity, 1.0, sigma=sigma, robust=Robustness(kind="budgeted", gamma=2)
    )
    assert [o[0] for o in nominal.orders] == [0, 0]
    assert [o[0] for o in box.orders] == [1, 1] and [o[0] for o in budgeted.orders] == [1, 1]


def test_a_plan_cut_short_by_the_window_is_counted_with_its_gap():
    from winnow.route.proxy_metrics import ProxyCounts, request_metrics

    rng = np.random.default_rng(0)
    quality, cost = rng.uniform(size=(60, 4)), rng.uniform(0.1, 1.0, (60, 4))
    hurried = plan_window(quality, cost, np.full(4, 20), 20.0, time_limit=1e-9, mip_rel_gap=0)
    assert hurried.time_limit_hit and hurried.mip_gap > 0
    assert all(order for order in hurried.orders)  # the best plan found is still used
    counts = ProxyCounts()
    counts.record_plan(False, 0.0)
    counts.record_plan(hurried.time_limit_hit, hurried.mip_gap)
    metrics = request_metrics(counts, 0, [0.01, 0.02])
    assert metrics["plans"] == 2 and metrics["plans_time_limited"] == 1
    assert metrics["plan_max_gap_time_limited"] == hurried.mip_gap


def test_a_window_whose_budget_equals_a_plans_cost_answers_every_request():
    # The proxy's path: picodollar costs as USD floats, and a budget that is exactly the cost of
    # the best plan (three requests, each best on its own model), which sums inexactly in floats.
    pico = np.array([[10**11, 0, 0], [0, 2 * 10**11, 0], [0, 0, 4 * 10**11]])
    quality = np.where(pico > 0, 0.9, 0.1)
    budget = pico_to_usd(int(np.trace(pico)))  # $0.7
    orders = plan_window(quality, pico / 10**12, np.array([3, 3, 3]), budget).orders
    assert [order[0] for order in orders] == [0, 1, 2]  # nobody deferred, each on its best model
    spent = sum(pico[i, order[0]] for i, order in enumerate(orders))
    assert spent == usd_to_pico(budget, rounding="down")  # the ledger takes every reservation


@pytest.mark.parametrize(
    ("status", "body", "charge_failed", "expected"),
    [
        (200, {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, False, (200, (3, 4))),
        (200, {"usage": {"prompt_tokens": -1}}, False, (200, None)),
        (200, [1], False, ("failure", True)),
        (200, b"<html>busy</html>", False, ("failure", True)),
        (200, b"\xff\xfe", False, ("failure", True)),
        (422, {"error": {"message": "bad"}}, False, (422, None)),
        (400, b"<html>bad</html>", False, (400, None)),
        (500, {}, False, ("failure", False)),
        (503, {}, True, ("failure", True)),
        (429, {}, False, ("failure", False)),
    ],
)
def test_upstream_answers_map_to_the_charging_table(status, body, charge_failed, expected):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = upstream.read_reply(status, raw, charge_failed)
    if expected[0] == "failure":
        assert isinstance(reply, upstream.Failure) and reply.billed is expected[1]
    else:
        assert (reply.status, reply.usage) == expected
        assert isinstance(reply.payload, dict)


# -- the proxy on loopback --------------------------------------------------------------------


def upstream_app(mode: str) -> FastAPI:
    """An OpenAI-style upstream; mode 'ok', 'fail' (500), 'slow' (answers after the proxy's
    timeout), 'lag' (answers after LAG_SECONDS) or 'overbill' (reports more completion tokens
    than max_tokens)."""
    app = FastAPI()
    app.state.bodies = []

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        if mode == "fail":
            return JSONResponse({"error": {"message": "upstream broke"}}, status_code=500)
        if mode in ("slow", "lag"):
            await asyncio.sleep(SLOW_SECONDS if mode == "slow" else LAG_SECONDS)
        limit = body["max_tokens"]
        completion = limit + 100 if mode == "overbill" else limit // 2
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": UPSTREAM_PROMPT_TOKENS,
                "completion_tokens": completion,
                "total_tokens": UPSTREAM_PROMPT_TOKENS + completion,
            },
        }

    return app


class LoopbackServer:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app) -> None:
        self.app = app
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture(scope="module")
def upstreams():
    modes = {"ok": "ok", "fail": "fail", "slow": "slow", "lag": "lag", "over": "overbill"}
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(LoopbackServer(upstream_app(mode)))
            for name, mode in modes.items()
        }


def pool_urls(upstreams) -> dict[str, str]:
    return {
        "flaky": upstreams["fail"].url,
        "slow": upstreams["slow"].url,
        "strong": upstreams["ok"].url,
        "cheap": upstreams["ok"].url,
    }


class FakeClock:
    """A clock the test moves by hand; the proxy reads it from its own thread."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ask(client: httpx.Client, content: str, **fields) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], **fields}
    return client.post("/v1/chat/completions", json=body)


def test_200_concurrent_requests_never_exceed_the_budgets(upstreams):
    # Even the cheapest routing (the 20 pinned to 'strong', the rest to 'cheap') costs more than
    # the day affords, so some requests must be refused however the router and timing fall.
    def usage_cost(model) -> float:
        completion = CAP // 2  # what the 'ok' upstream reports
        return (
            UPSTREAM_PROMPT_TOKENS * model.input_price_per_token
            + completion * model.output_price_per_token
        )

    prices = {m.name: m for m in pool_config(pool_urls(upstreams)).models}
    cheapest_total = 20 * usage_cost(prices["strong"]) + 180 * usage_cost(prices["cheap"])
    config = pool_config(pool_urls(upstreams), budget_per_day=0.8 * cheapest_total)

    async def send_all(url: str) -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH, timeout=20, limits=limits
        ) as client:

            async def one(i: int) -> tuple[int, httpx.Response]:
                body = {"messages": [{"role": "user", "content": f"question {i}"}]}
                if i % 10 == 0:
                    body["model"] = "strong"
                return i, await client.post("/v1/chat/completions", json=body)

            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 40)

    with LoopbackServer(create_app(config, quality_for(config))) as proxy:
        results = asyncio.run(send_all(proxy.url))
        metrics = httpx.get(f"{proxy.url}/metrics", headers=AUTH, timeout=5).json()

    statuses = [response.status_code for _, response in results]
    unexpected = [(i, r.status_code, r.text) for i, r in results if r.status_code not in (200, 429)]
    assert len(results) == 200 and not unexpected
    assert set(statuses) == {200, 429}  # some served, some over budget
    charged = Decimal(0)
    for i, response in results:
        if response.status_code == 429:
            assert response.json()["error"]["type"] == "budget_exhausted"
            assert int(response.headers["retry-after"]) >= 1
            continue
        model = response.headers["x-winnow-model"]
        assert model == response.json()["model"]
        assert (model == "strong") if i % 10 == 0 else (model in {"strong", "cheap"})
        charged += Decimal(response.headers["x-winnow-cost"])

    # Every request was answered exactly once, and nothing is left held.
    assert sum(metrics["requests"]["responses"].values()) == 200
    assert metrics["requests"]["responses"] == {str(s): statuses.count(s) for s in (200, 429)}
    budget = metrics["budget"]
    assert budget["open_reservations"] == 0
    assert all(m["in_flight"] == 0 for m in metrics["models"].values())
    # The failing and the slow upstream's requests moved to other models.
    assert metrics["models"]["flaky"]["errors"] > 0 and metrics["models"]["flaky"]["served"] == 0
    assert metrics["models"]["slow"]["errors"] > 0 and metrics["models"]["slow"]["served"] == 0
    assert metrics["requests"]["fallbacks"] >= metrics["models"]["flaky"]["errors"]
    served = {name: m["served"] for name, m in metrics["models"].items()}
    assert sum(served.values()) == statuses.count(200)

    # The budgets held: per window, per day, and for what clients were charged.
    assert budget["windows_opened"] >= 200 // config.max_batch
    assert budget["peak_window_usd"] <= config.budget_per_window
    assert budget["peak_day_usd"] <= config.budget_per_day
    for window in budget["windows"]:
        assert window["reserved_usd"] == 0
        assert window["settled_usd"] <= config.budget_per_window
    (today,) = budget["days"]
    assert float(charged) <= today["settled_usd"] + 1e-12
    assert today["settled_usd"] <= config.budget_per_day
    # max_tokens was enforced on every forwarded call that reached an upstream (on a loaded
    # machine a call to the slow one can time out before its server reads the body).
    received = [
        body for name in ("ok", "fail", "slow") for body in upstreams[name].app.state.bodies
    ]
    assert received and {body["max_tokens"] for body in received} == {CAP}


def test_auth_size_streaming_and_unknown_models_are_refused(upstreams):
    config = pool_config(pool_urls(upstreams))
    with (
        LoopbackServer(create_app(config, quality_for(config))) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            assert client.get("/metrics", headers=headers).status_code == 401
            assert client.get("/v1/models", headers=headers).status_code == 401
            response = client.post("/v1/chat/completions", headers=headers, json={})
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"

        client.headers.update(AUTH)
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["flaky", "slow", "strong", "cheap"]

        response = ask(client, "x" * 5000)
        assert response.status_code == 413 and "4096 bytes" in response.json()["error"]["message"]
        response = ask(client, "hi", stream=True)
        assert response.status_code == 400
        assert "streaming is not supported" in response.json()["error"]["message"]
        response = ask(client, "hi", model="gpt-9")
        assert response.status_code == 400
        assert "flaky, slow, strong, cheap" in response.json()["error"]["message"]
        response = ask(client, "hi", model="strong", n=10_000)
        assert response.status_code == 400 and "lower max_tokens" in response.text

        # A named model is used as asked, with max_tokens clamped to the cap.
        response = ask(client, "hi", model="strong", max_tokens=10_000)
        assert response.status_code == 200
        assert response.headers["x-winnow-model"] == response.json()["model"] == "strong"
        assert upstreams["ok"].app.state.bodies[-1]["max_tokens"] == CAP
        price = TokenPrice.from_usd(2e-6, 4e-6)
        expected = call_cost(UPSTREAM_PROMPT_TOKENS, CAP // 2, price)
        assert response.headers["x-winnow-cost"] == format_usd(expected)

        # A named model is never swapped for another: its failure is a 502.
        response = ask(client, "hi", model="flaky")
        assert response.status_code == 502 and "flaky: HTTP 500" in response.text

        metrics = client.get("/metrics").json()
        assert metrics["requests"]["rejected"] == 3 + 4
        assert metrics["requests"]["responses"] == {
            "200": 1,
            "400": 3,
            "401": 3,
            "413": 1,
            "502": 1,
        }


def test_an_over_reporting_upstream_is_charged_as_reported_and_rested(upstreams):
    # 'over' reports 100 completion tokens more than max_tokens; 'cheap' behaves.
    config = pool_config({"strong": upstreams["over"].url, "cheap": upstreams["ok"].url})
    quality = ConstantQuality([0.9, 0.5])  # 'strong' first while it is trusted
    with (
        LoopbackServer(create_app(config, quality)) as proxy_server,
        httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=10) as client,
    ):
        first = ask(client, "hi")
        second = ask(client, "hi again")
        metrics = client.get("/metrics").json()
    assert first.status_code == 200 and first.headers["x-winnow-model"] == "strong"
    assert second.status_code == 200 and second.headers["x-winnow-model"] == "cheap"  # rested
    assert metrics["requests"]["usage_over_reservation"] == 1
    assert metrics["models"]["strong"]["breaker"] == "open"
    # The excess is at most the 100 extra completion tokens; it was charged, not capped.
    excess = metrics["budget"]["overage_usd"]
    assert 0 < excess <= 100 * config.models[0].output_price_per_token
    (window, *_) = metrics["budget"]["windows"]
    assert Decimal(first.headers["x-winnow-cost"]) == Decimal(str(window["settled_usd"]))
    for header in ("x-winnow-window-remaining", "x-winnow-day-remaining"):
        assert Decimal(second.headers[header]) >= 0
    # Spend can pass a budget by that one call's excess, never more.
    assert metrics["budget"]["peak_day_usd"] <= config.budget_per_day + excess


def test_a_failing_upstream_is_rested_after_consecutive_failures(upstreams):
    config = pool_config({"flaky": upstreams["fail"].url, "cheap": upstreams["ok"].url})
    quality = ConstantQuality([0.95, 0.5])
    with (
        LoopbackServer(create_app(config, quality)) as proxy_server,
        httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=10) as client,
    ):
        answers = [ask(client, f"q{i}") for i in range(6)]
        metrics = client.get("/metrics").json()
    assert all(a.status_code == 200 and a.headers["x-winnow-model"] == "cheap" for a in answers)
    flaky = metrics["models"]["flaky"]
    assert flaky["errors"] == config.breaker_failures  # then it was no longer tried
    assert flaky["breaker"] == "open" and metrics["requests"]["fallbacks"] == 3
    plan = metrics["requests"]["plan_ms"]  # one planned window per request here
    assert plan["windows"] == 6 and 0 < plan["p50"] <= plan["p99"]
    assert metrics["requests"]["plans"] == 6 and metrics["requests"]["plans_time_limited"] == 0


def test_server_timing_splits_a_requests_latency(upstreams):
    # 'flaky' fails first, then 'cheap' answers after LAG_SECONDS: both calls are upstream time.
    config = pool_config({"flaky": upstreams["fail"].url, "cheap": upstreams["lag"].url})
    with (
        LoopbackServer(create_app(config, ConstantQuality([0.95, 0.5]))) as proxy_server,
        httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=10) as client,
    ):
        started = time.perf_counter()
        answer = ask(client, "hi")
        latency_ms = 1000 * (time.perf_counter() - started)
    assert answer.status_code == 200 and answer.headers["x-winnow-model"] == "cheap"
    parts = (part.strip().split(";") for part in answer.headers["server-timing"].split(","))
    timing = {name: float(duration.removeprefix("dur=")) for name, duration in parts}
    assert list(timing) == ["window", "plan", "upstream"]
    assert timing["window"] == float(answer.headers["x-winnow-waited-ms"])
    assert timing["upstream"] >= 1000 * LAG_SECONDS and timing["plan"] > 0
    assert sum(timing.values()) <= latency_ms


def test_a_client_gone_before_dispatch_is_dropped_unbilled_and_the_queue_is_bounded(upstreams):
    config = pool_config({"cheap": upstreams["ok"].url}, window_seconds=1.0, max_waiting=2)
    calls = upstreams["ok"].app.state.bodies
    calls_before = len(calls)
    with LoopbackServer(create_app(config, ConstantQuality([0.5]))) as proxy_server:
        with (
            httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=0.2) as impatient,
            pytest.raises(httpx.TimeoutException),
        ):
            ask(impatient, "I will not wait a whole window")
        time.sleep(1.5)  # the window closes after the client left
        with httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=10) as client:
            metrics = client.get("/metrics").json()
            calls_after_drop = len(calls)

            async def burst() -> list[httpx.Response]:
                async with httpx.AsyncClient(
                    base_url=proxy_server.url, headers=AUTH, timeout=10
                ) as fast:
                    body = {"messages": [{"role": "user", "content": "q"}]}
                    send = [fast.post("/v1/chat/completions", json=body) for _ in range(5)]
                    return await asyncio.gather(*send)

            statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert metrics["requests"]["disconnected_before_dispatch"] == 1
    assert metrics["models"]["cheap"]["assigned"] == 0 and calls_after_drop == calls_before
    assert all(w["settled_usd"] == 0 for w in metrics["budget"]["windows"])
    assert statuses == [200, 200, 429, 429, 429]  # two wait, three find the queue full


def test_deeply_nested_json_is_a_400_naming_the_limit(upstreams):
    config = pool_config({"cheap": upstreams["ok"].url}, max_request_bytes=20_000)
    nested = '{"messages": [{"role": "user", "content": "x"}], "metadata": ' + "[" * 5000
    nested += "]" * 5000 + "}"
    with (
        LoopbackServer(create_app(config, ConstantQuality([0.5]))) as proxy_server,
        httpx.Client(base_url=proxy_server.url, headers=AUTH, timeout=10) as client,
    ):
        deep = client.post("/v1/chat/completions", content=nested.encode())
        shallow = nested.replace("[" * 5000, "[" * 70).replace("]" * 5000, "]" * 70)
        moderate = client.post("/v1/chat/completions", content=shallow.encode())
    for response in (deep, moderate):
        assert response.status_code == 400 and "nested more than 64" in response.text


@pytest.mark.parametrize("wait", [5.0, 0.0])
def test_requests_a_window_cannot_afford_wait_for_the_next_while_the_day_has_room(upstreams, wait):
    base = pool_config({"cheap": upstreams["ok"].url})
    body = {"messages": [{"role": "user", "content": "q"}]}
    request = parse_chat_request(json.dumps(body).encode(), base)
    price = TokenPrice.from_usd(1e-7, 2e-7)
    worst = pico_to_usd(call_cost(request.prompt_tokens, request.completion_tokens, price))
    config = pool_config(
        {"cheap": upstreams["ok"].url},
        budget_per_window=1.5 * worst,  # one request per window
        window_seconds=0.05,
        max_wait_seconds=wait,
    )

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=proxy_server.url, headers=AUTH, timeout=20) as c:
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in "abc"))

    with LoopbackServer(create_app(config, ConstantQuality([0.5]))) as proxy_server:
        statuses = sorted(r.status_code for r in asyncio.run(three()))
        metrics = httpx.get(f"{proxy_server.url}/metrics", headers=AUTH, timeout=5).json()
    if wait:
        assert statuses == [200, 200, 200] and metrics["requests"]["requeued_for_next_window"] >= 2
    else:
        assert statuses == [200, 429, 429]
    assert metrics["budget"]["peak_window_usd"] <= config.budget_per_window


class WrongWidthQuality:
    """A quality model with one column too few: routing fails, yet every request is answered."""

    def predict(self, prompts):
        return np.full((len(prompts), 1), 0.5), np.zeros((len(prompts), 1))


def test_a_failing_quality_model_answers_500_and_the_proxy_keeps_serving(upstreams):
    config = pool_config({"strong": upstreams["ok"].url, "cheap": upstreams["ok"].url})
    with (
        LoopbackServer(create_app(config, WrongWidthQuality())) as proxy,
        httpx.Client(base_url=proxy.url, headers=AUTH, timeout=10) as client,
    ):
        routed = ask(client, "hi")
        named = ask(client, "hi", model="cheap")
        metrics = client.get("/metrics").json()
    assert routed.status_code == 500 and "see the proxy's log" in routed.text
    assert named.status_code == 200 and named.headers["x-winnow-model"] == "cheap"
    assert metrics["budget"]["open_reservations"] == 0


def test_the_daily_budget_resets_at_utc_midnight(upstreams):
    # Output tokens only: each call reserves CAP * 1e-6 USD and settles half of that.
    model = {
        "name": "cheap",
        "base_url": f"{upstreams['ok'].url}/v1",
        "input_price_per_token": 0.0,
        "output_price_per_token": 1e-6,
        "capacity": 4,
    }
    config = pool_config(LOCAL, models=[model], budget_per_window=1.0, budget_per_day=50e-6)
    clock = FakeClock(datetime(2024, 3, 1, 23, 59, 0, tzinfo=timezone.utc))
    app = create_app(config, ConstantQuality([0.5]), clock=clock)
    with (
        LoopbackServer(app) as proxy,
        httpx.Client(base_url=proxy.url, headers=AUTH, timeout=10) as client,
    ):
        statuses = [ask(client, f"q{i}").status_code for i in range(3)]
        refused = ask(client, "one more")
        clock.now += timedelta(minutes=1, seconds=1)
        after_midnight = ask(client, "a new day")
        metrics = client.get("/metrics").json()

    assert statuses == [200, 200, 429]  # 16 + 16 settled; 18 left < 32 worst case
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    error = refused.json()["error"]
    assert "daily budget" in error["message"] and error["day_resets_at"].startswith("2024-03-02T00")
    assert after_midnight.status_code == 200
    spent = {day["day"]: day["settled_usd"] for day in metrics["budget"]["days"]}
    assert spent == pytest.approx({"2024-03-01": 32e-6, "2024-03-02": 16e-6})
    assert metrics["today"] == "2024-03-02"


def test_the_access_log_goes_to_stderr_not_the_captured_stdout():
    import uvicorn

    from winnow.route.server import access_log_on_stderr

    config = access_log_on_stderr(uvicorn)
    assert config["handlers"]["access"]["stream"] == "ext://sys.stderr"
    assert config["loggers"] == uvicorn.config.LOGGING_CONFIG["loggers"]
    assert uvicorn.config.LOGGING_CONFIG["handlers"]["access"]["stream"] == "ext://sys.stdout"
