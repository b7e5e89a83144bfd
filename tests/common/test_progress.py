import io

from rich.console import Console

from winnow.common.progress import format_metrics, track_progress


def test_format_metrics():
    assert format_metrics({"loss": 0.1234567, "step": 3, "acc": None}) == "loss=0.1235 step=3"


def test_off_a_terminal_a_plain_line_per_interval_and_one_at_the_end():
    every_step = io.StringIO()
    console = Console(file=every_step, force_terminal=False, width=200)
    with track_progress("work", total=4, console=console, interval_s=0.0) as bar:
        for _ in range(4):
            bar.advance(1, loss=0.5)
    lines = every_step.getvalue().splitlines()
    assert len(lines) == 4  # one per step; the end adds none when the last step was printed
    assert lines[0].startswith("work: 1/4 (25%), ") and "left" in lines[0]
    assert lines[-1].startswith("work: 4/4 (100%), ") and lines[-1].endswith("loss=0.5")

    narrow = io.StringIO()  # a log file: rich assumes 80 columns, the line must not wrap
    console = Console(file=narrow, force_terminal=False, width=40)
    with track_progress("a long description of the work", 2, console=console) as bar:
        bar.advance(2, some_metric=0.123456, another_metric=7)
    assert len(narrow.getvalue().splitlines()) == 1

    rarely = io.StringIO()
    console = Console(file=rarely, force_terminal=False, width=200)
    with track_progress("work", total=3, console=console, interval_s=3600.0) as bar:
        for _ in range(3):
            bar.advance(1)
    assert rarely.getvalue().splitlines() == [rarely.getvalue().splitlines()[0]]
    assert rarely.getvalue().startswith("work: 3/3 (100%), ")


def test_progress_draws_on_a_terminal_unless_quiet():
    shown = io.StringIO()
    with track_progress("work", 2, console=Console(file=shown, force_terminal=True)) as bar:
        bar.advance(2, loss=0.25)
    assert "work" in shown.getvalue() and "loss=0.25" in shown.getvalue()
    for terminal in (True, False):
        hidden = io.StringIO()
        console = Console(file=hidden, force_terminal=terminal)
        with track_progress("work", 2, quiet=True, console=console, interval_s=0.0) as bar:
            bar.advance(2)
        assert hidden.getvalue() == ""
