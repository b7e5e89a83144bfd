"""Calls that Ctrl-C can stop at once, even while a C solver holds the thread.

A signal is only handled between Python bytecodes of the main thread, so a long call into HiGHS
would keep ``KeyboardInterrupt`` waiting until it returns. :func:`call_interruptibly` runs the
call in a daemon thread (HiGHS releases the GIL) and waits in short joins, which the signal
interrupts: the caller gets ``KeyboardInterrupt`` within a fraction of a second, and the
abandoned thread dies with the process. Use it only for calls whose results are written
afterwards (atomically), so an interrupt leaves nothing half-written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["call_interruptibly"]

T = TypeVar("T")

_POLL_SECONDS = 0.1


def call_interruptibly(function: Callable[[], T]) -> T:
    """``function()``, its exception re-raised here; Ctrl-C raises at once, not when it ends."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="interruptible-call", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(_POLL_SECONDS)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
