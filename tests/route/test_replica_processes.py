"""Three `winnow route serve` processes sharing one Redis, one killed mid-run (issue 21): what
the upstreams saw says no overspend, no request lost, no model over its capacity. The same
harness as benchmarks/route/bench_replicas.py, on fewer requests."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from winnow.route.local_redis import redis_server

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "route"))
import bench_replicas  # the benchmark's harness, run small


def test_three_replicas_with_one_killed_keep_every_guarantee():
    requests = 45
    day = 0.6 * requests * bench_replicas.ANSWER_TOKENS * min(bench_replicas.PRICE.values())
    upstreams, url = bench_replicas.start_upstreams(bench_replicas.serve_upstreams)
    try:
        with redis_server() as redis_url:
            ledger = {"backend": "redis", "url": redis_url}
            result = bench_replicas.run(3, ledger, requests, True, url, day)
        stats = httpx.get(f"{url}/stats", timeout=10).json()
    finally:
        upstreams.kill()
    assert result["lost"] == 0 and sum(result["statuses"].values()) == requests
    assert result["billed_usd"] <= day + 1e-15 and result["overspend_usd"] == 0
    assert result["statuses"]["429"] > 0  # the budget, not the load, decided
    assert result["capacity_excess"] == 0
    assert all(model["peak"] <= bench_replicas.CAPACITY for model in stats.values())
