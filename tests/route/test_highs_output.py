"""HiGHS's C-level stdout: captured at fd 1 around a solve, shown on stderr only on failure."""

import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from winnow.route.highs_output import captured_stdout, run_highs


def test_a_c_level_write_is_captured_and_kept_off_stdout(capfd):
    print("before", flush=True)
    with captured_stdout() as output:
        os.write(1, b"HighsMipSolverData::tmpSolver.run();\n")
    print("after", flush=True)
    captured = capfd.readouterr()
    assert "HighsMip" not in captured.out and "HighsMip" not in captured.err
    assert captured.out == "before\nafter\n"
    assert output.text == "HighsMipSolverData::tmpSolver.run();\n"


def test_a_failing_block_surfaces_its_output_on_stderr(capfd):
    with pytest.raises(RuntimeError, match="boom"), captured_stdout():
        os.write(1, b"diagnostic from C\n")
        raise RuntimeError("boom")
    captured = capfd.readouterr()
    assert "diagnostic from C" in captured.err and "diagnostic from C" not in captured.out
    os.write(1, b"fd 1 is back\n")
    assert capfd.readouterr().out == "fd 1 is back\n"


def test_run_highs_surfaces_only_a_failure_status(capfd):
    def solver(status):
        os.write(1, b"solver chatter\n")
        return SimpleNamespace(status=status, message="numerical trouble")

    assert run_highs(solver, 0).status == 0
    assert run_highs(solver, 2).status == 2  # infeasible: an answer, not a failure
    assert "solver chatter" not in "".join(capfd.readouterr())
    run_highs(solver, 4)
    captured = capfd.readouterr()
    assert "solver chatter" in captured.err and "numerical trouble" in captured.err
    assert captured.out == ""


def test_overlapping_captures_in_threads_restore_fd_1(capfd):
    """Two threads inside at once share one redirection; the last one out restores fd 1."""
    inside, release = threading.Barrier(2), threading.Event()

    def solve():
        with captured_stdout():
            inside.wait()
            release.wait()
            os.write(1, b"noise\n")

    worker = threading.Thread(target=solve)
    worker.start()
    with captured_stdout():
        inside.wait()
        release.set()
    worker.join()
    os.write(1, b"visible\n")
    assert capfd.readouterr().out == "visible\n"


def test_a_real_milp_prints_nothing_on_stdout(capfd):
    from scipy.optimize import milp

    result = run_highs(milp, -np.ones(3), integrality=np.ones(3), bounds=(0, 1))
    assert result.status == 0 and np.allclose(result.x, 1)
    assert capfd.readouterr().out == ""


def test_verbose_runs_leave_highs_output_on_stdout(capfd, monkeypatch):
    from winnow.common.verbosity import VERBOSE_ENV

    monkeypatch.setenv(VERBOSE_ENV, "1")

    def solver():
        os.write(1, b"solver chatter\n")
        return SimpleNamespace(status=0, message="")

    run_highs(solver)
    assert capfd.readouterr().out == "solver chatter\n"
