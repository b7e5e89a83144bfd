"""The routing proxy live: RouterBench test prompts replayed through `winnow route serve`.

    .venv/bin/python benchmarks/route/bench_proxy.py [--rate 200] [--repeats 2] [--out PATH]

The proxy runs as its own process (`winnow route serve`, one uvicorn worker) with a quality model
fitted by `winnow route fit` on RouterBench's training queries (kNN on TF-IDF). Its pool is the
11 RouterBench models, each a fake upstream (one process for all, apart from the load
generator's) that answers a prompt with the
recorded correctness as its content and reports the recorded cost as completion tokens (output
price = the model's largest recorded cost / ``max_tokens``, input price 0, so a model's
worst-case reservation is its largest recorded cost). Test prompts are sent at ``--rate``
requests per second (uniform arrivals), each marked by the OpenAI ``user`` field, which the
quality model never reads.

Measured: live accuracy (recorded correctness of the model that answered; an unanswered request
counts as wrong), realised spend against every window's and the day's budget (overspend), the
share of 429s, and the proxy's added latency: the client's latency less the request's wait for
its window to close (``Server-Timing`` ``window``), so planning, the upstream call and HTTP
overheads; less the upstream call as well (``upstream``) it is the proxy's own share. The
offline comparison solves the very windows the proxy formed (``x-winnow-window``) with the same
quality estimates, worst-case costs, per-window budget and capacities (`assign_batch`), and
also with the recorded costs, which no live proxy knows before a call.

Writes benchmarks/results/route_proxy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import uvicorn
import yaml
from fastapi import FastAPI, Request

from winnow.common.config import load_config
from winnow.common.runs import atomic_write_text
from winnow.route.assign import assign_batch
from winnow.route.datasets import load_routerbench
from winnow.route.fitted import RouteFitConfig, fit_quality_model, save_quality_model

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_proxy.json"
MAX_TOKENS = 1000
WINDOW_SECONDS, MAX_BATCH, CAPACITY = 0.25, 50, 13  # capacity: a quarter of a full window
BUDGET_LEVEL = 0.25  # per query: cheapest worst case + 25% of the way to the best estimate's
KEY = "bench-proxy-key-0123456789"


def fake_upstreams(data, prices) -> FastAPI:
    """Model j answers prompt q with its recorded correctness and cost (as completion tokens)."""
    app = FastAPI()

    @app.post("/m{j}/v1/chat/completions")
    async def complete(j: int, request: Request):
        body = await request.json()
        q = int(body["user"])
        tokens = round(float(data.cost[q, j] / prices[j]))
        return {
            "id": f"bench-{q}",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{data.quality[q, j]:g}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": min(tokens, MAX_TOKENS)},
        }

    return app


def serve_upstreams(port: int) -> None:
    """The fake upstreams of the test split on ``port``: a process of their own, so that their
    work is not queued behind the load generator's (or the proxy's)."""
    test = load_routerbench("test")
    prices = test.cost.max(axis=0) / MAX_TOKENS
    uvicorn.run(fake_upstreams(test, prices), host="127.0.0.1", port=port, log_level="warning")


def start_upstreams(serve=serve_upstreams) -> tuple[multiprocessing.Process, str]:
    """``serve(port)`` (fake upstreams) in a process of its own; the process and its URL."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/docs", {}, "the fake upstreams did not start", process.kill)
    return process, url


def wait_until_up(url: str, headers: dict, message: str, kill) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url, headers=headers, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    kill()
    raise RuntimeError(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_proxy(config: dict, folder: Path) -> tuple[subprocess.Popen, str]:
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    winnow = Path(sys.executable).with_name("winnow")
    process = subprocess.Popen(
        [str(winnow), "route", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "proxy.log", "w"),  # noqa: SIM115 - lives as long as the proxy
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{config['port']}"
    headers = {"Authorization": f"Bearer {KEY}"}
    message = f"the proxy did not start; see {folder / 'proxy.log'}"
    wait_until_up(f"{url}/v1/models", headers, message, process.kill)
    return process, url


async def replay(url: str, prompts: list[str], order: np.ndarray, rate: float) -> list[dict]:
    """Send ``prompts[order]`` at ``rate`` per second; one record per request. aiohttp: httpx's
    AsyncClient could not send 200 requests/s from this process (it peaked near 130/s)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=0)  # one connection per request in flight
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        url, headers=headers, connector=connector, timeout=timeout
    ) as c:

        async def one(i: int, q: int) -> dict:
            await asyncio.sleep(i / rate)
            body = {
                "messages": [{"role": "user", "content": prompts[q]}],
                "max_tokens": MAX_TOKENS,
                "user": str(q),
            }
            sent = time.perf_counter()
            try:
                async with c.post("/v1/chat/completions", json=body) as response:
                    answer = await response.json()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # under other_errors
                return {"query": int(q), "status": 0, "error": type(exc).__name__}
            latency = time.perf_counter() - sent
            record = {
                "query": int(q),
                "status": response.status,
                "latency_s": latency,
                "sent_s": sent,
            }
            if response.status == 200:
                record |= {
                    "model": response.headers["x-winnow-model"],
                    "window": int(response.headers["x-winnow-window"]),
                    "timing_s": server_timing(response.headers["server-timing"]),
                    "correct": float(answer["choices"][0]["message"]["content"]),
                }
            return record

        return await asyncio.gather(*(one(i, q) for i, q in enumerate(order)))


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` as {name: seconds}."""
    parts = (part.strip().split(";dur=") for part in header.split(","))
    return {name: float(ms) / 1000 for name, ms in parts}


def offline_accuracy(records, data, p_hat, budget_per_window, costs) -> float:
    """The proxy's own windows solved offline with ``costs``; unanswered requests count wrong."""
    windows: dict[int, list[int]] = {}
    for record in records:
        if "window" in record:
            windows.setdefault(record["window"], []).append(record["query"])
    correct = 0.0
    for queries in windows.values():
        rows = np.array(queries)
        choice = assign_batch(
            p_hat[rows], costs[rows], np.full(len(data.models), CAPACITY), budget_per_window,
            defer_infeasible=True, time_limit=5.0,
        ).choice  # fmt: skip
        served = choice >= 0
        correct += data.quality[rows[served], choice[served]].sum()
    return correct / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the test prompts")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--plan-gap", type=float, default=None, help="proxy.plan_mip_gap")
    parser.add_argument("--records", type=Path, help="also write every request's record here")
    args = parser.parse_args()
    test = load_routerbench("test")
    n = test.quality.shape[0]
    worst_per_model = test.cost.max(axis=0)
    prices = worst_per_model / MAX_TOKENS
    worst = np.tile(worst_per_model, (n, 1))  # what the proxy reserves per call
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fitted, manifest = fit_quality_model(load_config(RouteFitConfig, {}), quiet=True)
        save_quality_model(fitted, manifest, folder / "quality")
        p_hat, _ = fitted.predict(test.prompts)
        best = worst[np.arange(n), p_hat.argmax(axis=1)].mean()
        per_query = worst.min(axis=1).mean() + BUDGET_LEVEL * (best - worst.min(axis=1).mean())
        budget_per_window = float(per_query * MAX_BATCH)
        upstreams, upstream_url = start_upstreams()
        pool = [
            {
                "name": name,
                "base_url": f"{upstream_url}/m{j}/v1",
                "input_price_per_token": 0.0,
                "output_price_per_token": float(prices[j]),
                "capacity": CAPACITY,
            }
            for j, name in enumerate(test.models)
        ]
        requests = n * args.repeats
        config = {
            "host": "127.0.0.1",
            "port": free_port(),
            "prior_quality": {name: 0.5 for name in test.models},
            "proxy": {
                "models": pool,
                "api_keys": [KEY],
                "budget_per_window": budget_per_window,
                "budget_per_day": budget_per_window * requests,  # the windows bind, not the day
                "window_seconds": WINDOW_SECONDS,
                "max_batch": MAX_BATCH,
                "max_tokens_cap": MAX_TOKENS,
                "max_wait_seconds": 0.0,  # an unplaced request is answered 429 at once
                "quality_model": str(folder / "quality"),
                **({} if args.plan_gap is None else {"plan_mip_gap": args.plan_gap}),
            },
        }
        process, url = start_proxy(config, folder)
        try:
            order = np.concatenate(
                [np.random.default_rng(r).permutation(n) for r in range(args.repeats)]
            )
            started = time.perf_counter()
            records = asyncio.run(replay(url, test.prompts, order, args.rate))
            wall = time.perf_counter() - started
            metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).json()
        finally:
            process.terminate()
            process.wait(timeout=30)
            upstreams.kill()
    if args.records:
        atomic_write_text(args.records, json.dumps(records) + "\n")
    served = [r for r in records if r["status"] == 200]
    live = sum(r["correct"] for r in served) / len(records)
    offline = offline_accuracy(records, test, p_hat, budget_per_window, worst)
    offline_known = offline_accuracy(records, test, p_hat, budget_per_window, test.cost)
    added = np.array([1000 * (r["latency_s"] - r["timing_s"]["window"]) for r in served])
    upstream_ms = np.array([1000 * r["timing_s"]["upstream"] for r in served])
    own = added - upstream_ms  # planning and HTTP handling: the proxy's own share
    budget = metrics["budget"]
    overspend = sum(max(0.0, w["settled_usd"] - budget_per_window) for w in budget["windows"])
    summary = {
        "requests": len(records),
        "live_accuracy": live,
        "offline_accuracy": offline,
        "live_minus_offline": live - offline,
        "offline_accuracy_with_recorded_costs": offline_known,
        "overspend_usd": overspend,
        "spend_usd": sum(w["settled_usd"] for w in budget["windows"]),
        "budget_usd": budget_per_window * budget["windows_opened"],
        "share_429": sum(r["status"] == 429 for r in records) / len(records),
        "other_errors": sum(r["status"] not in (200, 429) for r in records),
        "added_latency_ms_p50": float(np.percentile(added, 50)),
        "added_latency_ms_p99": float(np.percentile(added, 99)),
        "upstream_ms_p50": float(np.percentile(upstream_ms, 50)),
        "upstream_ms_p99": float(np.percentile(upstream_ms, 99)),
        "proxy_own_ms_p50": float(np.percentile(own, 50)),
        "proxy_own_ms_p99": float(np.percentile(own, 99)),
        "offered_rate_per_s": args.rate,
        "achieved_rate_per_s": len(records) / wall,
        "windows": budget["windows_opened"],
        "plan_ms": metrics["requests"]["plan_ms"],
        "goals": {"overspend_usd": 0.0, "abs_live_minus_offline": 0.01, "added_p99_ms": 20.0},
    }
    payload = {
        "benchmark": "route_proxy",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "config": {
            "max_tokens": MAX_TOKENS,
            "window_seconds": WINDOW_SECONDS,
            "max_batch": MAX_BATCH,
            "capacity_per_model": CAPACITY,
            "budget_per_window_usd": budget_per_window,
            "budget_level": BUDGET_LEVEL,
            "plan_mip_gap": args.plan_gap,
            "quality_model": manifest["estimator"] | {"features": manifest["features"]},
        },
        "summary": summary,
    }
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
