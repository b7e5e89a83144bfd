"""Calls that Ctrl-C can stop at once, even while a C solver holds the thread.

A signal is only handled between Python bytecodes of the main thread, so a long call into HiGHS
would keep ``KeyboardInterrupt`` waiting until it returns. :func:`call_interruptibly` runs the
call in a daemon thread (HiGHS releases the GIL) and waits in short joins, which the signal
interrupts: the caller gets ``KeyboardInterrupt`` within a fraction of a second. The abandoned
thread keeps running, so a command that stops on the interrupt must leave with
:func:`exit_now` (a normal interpreter exit under a running HiGHS thread aborts with "terminate
called without an active exception"). Use it only for calls whose results are written
afterwards (atomically), so an interrupt leaves nothing half-written.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar

__all__ = ["call_interruptibly", "exit_now"]

T = TypeVar("T")

_POLL_SECONDS = 0.1


def call_interruptibly(function: Callable[[], T]) -> T:
    """``function()``, its exception re-raised here; Ctrl-C raises at once, not when it ends."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name="interruptible-call", daemon=True)
    worker.start()
    # An Event, not Thread.join: a join cut by KeyboardInterrupt can mark the thread finished
    # while it still runs (CPython gh-90882), and it would then be abandoned unseen at exit.
    while not done.wait(_POLL_SECONDS):
        pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def exit_now(code: int) -> NoReturn:
    """Flush the standard streams and end the process at once, without the interpreter's
    clean-up (which would wait on, or abort under, a solver thread still running)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
