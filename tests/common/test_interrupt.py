import _thread
import signal
import threading
import time

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from winnow.common.interrupt import call_interruptibly


def test_returns_the_value_and_reraises_the_error():
    assert call_interruptibly(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        call_interruptibly(lambda: 1 / 0)


def hard_knapsack(seconds: float):
    """A multi-dimensional knapsack HiGHS cannot close in ``seconds`` (it then stops)."""
    rng = np.random.default_rng(0)
    weights = rng.integers(20, 100, (8, 120))
    values = weights.mean(axis=0) + rng.integers(0, 10, 120)
    return milp(
        -values,
        integrality=np.ones(120),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(weights, -np.inf, weights.sum(axis=1) / 2),
        options={"time_limit": seconds, "mip_rel_gap": 0},
    )


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, whatever a library loaded by an earlier test installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_highs_solve_within_a_second(python_ctrl_c):
    # Called directly, the signal would wait the 3 s for HiGHS to return.
    threading.Timer(0.2, _thread.interrupt_main).start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        call_interruptibly(lambda: hard_knapsack(3.0))
    assert time.perf_counter() - started < 1.0
    # The abandoned solve finishes at its limit; a process exiting under it would abort.
    for thread in threading.enumerate():
        if thread.name == "interruptible-call":
            thread.join()
