"""Whether the user asked to see the libraries' own output (``winnow --verbose``).

By default a run prints only winnow's lines: transformers' progress bars and save warnings and
HiGHS's solver log are silenced. ``winnow --verbose`` (or ``WINNOW_VERBOSE=1`` in the
environment, which subprocesses inherit) lets them through, for debugging a load or a solve.
"""

from __future__ import annotations

import os

__all__ = ["VERBOSE_ENV", "request_verbose", "verbose_requested"]

VERBOSE_ENV = "WINNOW_VERBOSE"


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def request_verbose() -> None:
    os.environ[VERBOSE_ENV] = "1"
