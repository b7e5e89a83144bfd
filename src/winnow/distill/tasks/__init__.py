"""Verifiable tasks, chosen by name from configs: ``build_task("addition", digits=[3])``, or by
import path for your own (``build_task("my_tasks:Multiplication", digits=2)``).

Each task draws problems from disjoint train/test splits and verifies responses; see
:class:`~winnow.distill.tasks.base.Task` for the interface every task follows, the registered
ones (:data:`TASKS`) included. :class:`JsonlTask` reads your problems from a JSONL file.
"""

from __future__ import annotations

from winnow.distill.tasks.arithmetic import AdditionTask
from winnow.distill.tasks.base import Problem, Task
from winnow.distill.tasks.jsonl import VERIFIERS, JsonlTask
from winnow.distill.tasks.math_answers import MathAnswerTask
from winnow.distill.tasks.registry import TASKS, build_task, load_reward
from winnow.distill.tasks.verbose import CONCISE_INSTRUCTION, VerboseAdditionTask

__all__ = [
    "CONCISE_INSTRUCTION",
    "TASKS",
    "VERIFIERS",
    "AdditionTask",
    "JsonlTask",
    "MathAnswerTask",
    "Problem",
    "Task",
    "VerboseAdditionTask",
    "build_task",
    "load_reward",
]
