"""A bounded request queue with a deadline per request, for CPU-bound model calls.

:class:`RequestQueue` admits at most ``max_queue`` requests at once (waiting or running) and
runs them one at a time, in arrival order, on one worker thread: the model calls are CPU-bound
and share a tokenizer that is not thread-safe, so a second thread would only wait on the first.

- A request beyond ``max_queue`` fails at once with
  :class:`~winnow.search.exceptions.ServerBusyError`, whose ``retry_after_s`` estimates when the
  queue frees (the mean run time so far times the requests admitted, at least 1 s).
- A request not answered within ``timeout_s`` of its admission fails with
  :class:`~winnow.search.exceptions.ServerTimeoutError`. If it was still waiting it never runs;
  if it was running it runs to its end (a forward pass cannot be interrupted) and keeps its
  place in the count until then, so abandoned work never piles up beyond ``max_queue``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from winnow.search.exceptions import SearchInputError, ServerBusyError, ServerTimeoutError

__all__ = ["RequestQueue"]

T = TypeVar("T")

# Weight of the newest run in the running mean of run times.
_MEAN_WEIGHT = 0.2


class RequestQueue:
    """At most ``max_queue`` requests waiting or running, one running, each within ``timeout_s``.

    Args:
        max_queue: requests admitted at once (waiting or running), >= 1.
        timeout_s: seconds from admission to answer, > 0.

    :meth:`run` is awaited from the event loop; :attr:`admitted` is the count now.
    """

    def __init__(self, max_queue: int, timeout_s: float):
        if not isinstance(max_queue, int) or max_queue < 1:
            raise SearchInputError(f"max_queue must be an int >= 1; got {max_queue!r}")
        if not timeout_s > 0:
            raise SearchInputError(f"timeout_s must be a number of seconds > 0; got {timeout_s!r}")
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winnow-search")
        self._count_lock = threading.Lock()
        self._admitted = 0
        self._mean_run_s = 0.0

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet finished (waiting or running)."""
        return self._admitted

    async def run(self, work: Callable[[], T]) -> T:
        """``work()``'s result, computed on the worker thread once the requests ahead finish.

        Raises ServerBusyError when ``max_queue`` requests are already admitted and
        ServerTimeoutError after ``timeout_s``; an exception of ``work`` propagates.
        """
        ahead = self._admit()
        try:
            future = self._executor.submit(self._timed, work)
        except RuntimeError:  # closed: the server is shutting down
            self._release()
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            raise ServerTimeoutError(
                f"no answer within the request timeout of {self.timeout_s:g} s ({ahead} "
                "requests were ahead of this one); retry later, or ask the operator to raise "
                "--request-timeout"
            ) from None

    def close(self) -> None:
        """Drop the waiting requests and stop the worker once the running one ends."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _admit(self) -> int:
        with self._count_lock:
            if self._admitted >= self.max_queue:
                retry = max(1, math.ceil(self._mean_run_s * self._admitted))
                raise ServerBusyError(
                    f"the server is busy: {self._admitted} requests are waiting or running, "
                    f"the most it queues; retry in {retry} s",
                    retry_after_s=retry,
                )
            self._admitted += 1
            return self._admitted - 1

    def _release(self, future: Future | None = None) -> None:
        with self._count_lock:
            self._admitted -= 1

    def _timed(self, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return work()
        finally:
            seconds = time.perf_counter() - start
            with self._count_lock:
                self._mean_run_s += _MEAN_WEIGHT * (seconds - self._mean_run_s)
