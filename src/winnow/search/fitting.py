"""What every trained ranker here shares: parameter checks that name the field, torch CPU
threads for a block, AdamW with linear warmup and decay, and what each step reports."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from numbers import Integral, Real

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = [
    "adamw_with_warmup",
    "check_choice",
    "check_int",
    "check_optional_int",
    "check_positive",
    "check_unit_interval",
    "report_step",
    "torch_threads",
]

StepCallback = Callable[[dict], None]
"""Receives ``{"step": 1-based, "loss": float, "lr": float}`` after each optimiser step."""


def check_choice(name: str, value: object, table: Mapping) -> None:
    """``value`` must be a key of ``table`` (a lookup table of variants)."""
    if value not in table:
        raise SearchInputError(f"{name} must be one of {sorted(table)}; got {value!r}")


def check_int(name: str, value: object, low: int) -> None:
    """``value`` must be an int (not a bool) of at least ``low``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise SearchInputError(f"{name} must be an int >= {low}; got {value!r}")


def check_optional_int(name: str, value: object, low: int) -> None:
    """``value`` must be ``None`` or an int of at least ``low``."""
    if value is not None and (not isinstance(value, Integral) or value < low):
        raise SearchInputError(f"{name} must be None or an int >= {low}; got {value!r}")


def check_positive(name: str, value: object) -> None:
    """``value`` must be a number > 0."""
    if not isinstance(value, Real) or value <= 0:
        raise SearchInputError(f"{name} must be a number > 0; got {value!r}")


def check_unit_interval(name: str, value: object) -> None:
    """``value`` must lie in ``[0, 1)`` (a ratio or a dropout probability)."""
    if not 0 <= value < 1:
        raise SearchInputError(f"{name} must be in [0, 1); got {value!r}")


def adamw_with_warmup(parameters: list, settings, total_steps: int):
    """AdamW over ``parameters`` with linear warmup (``settings.warmup_ratio`` of the steps) and
    linear decay to 0; ``settings`` holds ``learning_rate``, ``weight_decay``,
    ``warmup_ratio`` and ``device`` (a teacher). Shared by every ranker that trains here."""
    torch = require("torch", "search")
    optimizer = torch.optim.AdamW(
        parameters,
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
        fused=settings.device == "cpu" or None,  # one kernel over all tensors: 5-10x on CPU
    )
    warmup = int(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def report_step(
    history: list[float], loss: float, lr: float, bar, on_step: StepCallback | None
) -> None:
    """One optimiser step done: ``loss`` joins ``history`` and the progress ``bar``, and
    ``on_step`` (when given) receives the step, its loss and the learning rate it used, so a
    run can append each step to its metrics.jsonl while training goes on."""
    history.append(loss)
    bar.advance(1, loss=loss)
    if on_step is not None:
        on_step({"step": len(history), "loss": loss, "lr": lr})


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Use ``count`` torch CPU threads inside the block, then restore; ``None`` changes nothing."""
    if count is None:
        yield
        return
    torch = require("torch", "search")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
