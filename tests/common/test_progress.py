import io

from rich.console import Console

from winnow.common.progress import format_metrics, track_progress


def test_format_metrics():
    assert format_metrics({"loss": 0.1234567, "step": 3}) == "loss=0.1235 step=3"


def test_progress_is_silent_off_a_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False)
    with track_progress("work", total=3, console=console) as bar:
        for _ in range(3):
            bar.advance(1, loss=0.5)
    assert bar.completed == 3
    assert buffer.getvalue() == ""


def test_progress_draws_on_a_terminal_unless_quiet():
    shown = io.StringIO()
    with track_progress("work", 2, console=Console(file=shown, force_terminal=True)) as bar:
        bar.advance(2, loss=0.25)
    assert "work" in shown.getvalue() and "loss=0.25" in shown.getvalue()
    hidden = io.StringIO()
    with track_progress("work", 2, quiet=True, console=Console(file=hidden, force_terminal=True)):
        pass
    assert hidden.getvalue() == ""
