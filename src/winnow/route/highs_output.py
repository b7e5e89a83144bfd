"""HiGHS's own output kept off stdout: captured around each solve, shown only when it fails.

HiGHS prints from C++ straight to file descriptor 1, below Python's ``sys.stdout``: replacing
that object would miss it, and an unconditional debug line such as
``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();`` would land in a
user's terminal or in the middle of output piped to another program. :func:`captured_stdout`
points fd 1 at a temporary file for the duration of a block (``os.dup2``) and puts it back;
:func:`run_highs` wraps one ``scipy.optimize.milp`` / ``linprog`` call in it and copies the
captured text to stderr only when the call raises or HiGHS reports an error.

Descriptor 1 belongs to the whole process: while a solve runs, whatever any thread writes to it
(even through ``sys.stdout``) goes to the capture. Captures overlapping in several threads share
one redirection, counted, so the first in and the last out decide when fd 1 moves.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from winnow.common.verbosity import verbose_requested

__all__ = ["CapturedOutput", "captured_stdout", "run_highs"]

R = TypeVar("R")

# scipy's status for "the solver failed" (milp: other error; linprog: numerical difficulties);
# limits, infeasibility and unboundedness are answers the callers read themselves.
_HIGHS_FAILED = 4


@dataclass
class CapturedOutput:
    """What reached fd 1 during a :func:`captured_stdout` block (filled in when it ends)."""

    text: str = ""

    def surface(self, reason: str = "the solve failed") -> None:
        """Copy the captured text to stderr, headed by ``reason``; nothing when it is empty."""
        if self.text.strip():
            sys.stderr.write(f"solver output ({reason}):\n{self.text.rstrip()}\n")
            sys.stderr.flush()


class _Redirect:
    """The process-wide state: fd 1's saved target, the capture file, how many blocks are in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: int | None = None
        self.sink = None

    def enter(self) -> int | None:
        """Start (or join) the redirection; the capture file's offset now, None if impossible."""
        with self.lock:
            if self.depth == 0:
                try:
                    saved = os.dup(1)
                except OSError:  # no fd 1 at all (a detached daemon): nothing to capture
                    return None
                if sys.stdout is not None:  # Python's pending text belongs before the capture
                    sys.stdout.flush()
                _flush_c_streams()
                if self.sink is None:
                    self.sink = tempfile.TemporaryFile()  # noqa: SIM115 (lives with the process)
                os.ftruncate(self.sink.fileno(), 0)
                os.lseek(self.sink.fileno(), 0, os.SEEK_SET)
                os.dup2(self.sink.fileno(), 1)
                self.saved = saved
            self.depth += 1
            return os.lseek(self.sink.fileno(), 0, os.SEEK_CUR)

    def leave(self, start: int) -> str:
        """Text written since ``start``; the last block out puts fd 1 back."""
        with self.lock:
            _flush_c_streams()  # C's buffered printf output still belongs to the capture
            fd = self.sink.fileno()
            end = os.lseek(fd, 0, os.SEEK_CUR)
            data = os.pread(fd, end - start, start) if end > start else b""
            self.depth -= 1
            if self.depth == 0:
                os.dup2(self.saved, 1)
                os.close(self.saved)
                self.saved = None
        return data.decode("utf-8", errors="replace")


_REDIRECT = _Redirect()


@functools.cache
def _c_library():
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # no POSIX C library to reach (Windows)
        return None


def _flush_c_streams() -> None:
    library = _c_library()
    if library is not None:
        library.fflush(None)


@contextmanager
def captured_stdout() -> Iterator[CapturedOutput]:
    """Redirect fd 1 (C-level stdout) to a temporary file inside the block.

    Yields a :class:`CapturedOutput` whose ``text`` is set when the block ends. If the block
    raises, the text is surfaced on stderr before the exception propagates.
    """
    output = CapturedOutput()
    start = _REDIRECT.enter()
    if start is None:
        yield output
        return
    try:
        yield output
    except BaseException:
        output.text = _REDIRECT.leave(start)
        output.surface("the solve raised")
        raise
    output.text = _REDIRECT.leave(start)


def run_highs(solve: Callable[..., R], *args, **kwargs) -> R:
    """``solve(*args, **kwargs)`` (``scipy.optimize.milp`` or ``linprog``) with HiGHS's stdout
    captured; it reaches stderr only if the call raises or returns scipy's failure status 4.
    With ``winnow --verbose`` nothing is captured."""
    if verbose_requested():
        return solve(*args, **kwargs)
    with captured_stdout() as output:
        result = solve(*args, **kwargs)
    if getattr(result, "status", None) == _HIGHS_FAILED:
        output.surface(f"HiGHS: {getattr(result, 'message', 'failed')}")
    return result
