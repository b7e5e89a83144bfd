"""Verifiable tasks, chosen by name from configs: ``build_task("addition", digits=[3])``.

Each task draws problems from disjoint train/test splits and verifies responses; see
:class:`~winnow.distill.tasks.base.Task` for the interface every entry of :data:`TASKS` follows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.arithmetic import AdditionTask
from winnow.distill.tasks.base import Problem, Task
from winnow.distill.tasks.math_answers import MathAnswerTask
from winnow.distill.tasks.verbose import CONCISE_INSTRUCTION, VerboseAdditionTask

__all__ = [
    "CONCISE_INSTRUCTION",
    "TASKS",
    "AdditionTask",
    "MathAnswerTask",
    "Problem",
    "Task",
    "VerboseAdditionTask",
    "build_task",
]

TASKS: dict[str, Callable[..., Task]] = {
    AdditionTask.name: AdditionTask,
    MathAnswerTask.name: MathAnswerTask,
    VerboseAdditionTask.name: VerboseAdditionTask,
}


def build_task(name: str, **params: Any) -> Task:
    """The task registered as ``name`` in :data:`TASKS`, built with ``params``.

    Raises :class:`DistillInputError` naming the known tasks, or the parameters the task takes,
    before anything is built.
    """
    if name not in TASKS:
        raise DistillInputError(
            f"task name {name!r} is not one of {', '.join(TASKS)}; fix: pick one of those"
        )
    constructor = TASKS[name]
    signature = inspect.signature(constructor)
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise DistillInputError(
            f"task {name!r} got parameters {sorted(params)} ({exc}); it takes "
            f"{', '.join(signature.parameters)}"
        ) from None
    return constructor(**params)
