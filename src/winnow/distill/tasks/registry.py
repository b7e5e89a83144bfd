"""Tasks and reward functions by name: the registered ones, or yours by import path.

``task.name`` is a registered name (:data:`TASKS`) or an import path, ``package.module:Class``
or ``path/to/file.py:Class``; ``task.params`` go to the class's constructor, checked against
its signature first. A GRPO reward (``grpo.reward``) and a JSONL task's own verifier
(``task.verifier``) are functions named the same way. Nothing in the package has to change
for a user's task: TRL takes reward functions as arguments and verl by path; this is the
config-file form of both.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.arithmetic import AdditionTask
from winnow.distill.tasks.base import Task
from winnow.distill.tasks.math_answers import MathAnswerTask
from winnow.distill.tasks.verbose import VerboseAdditionTask

__all__ = ["TASKS", "build_task", "is_import_path", "load_object", "load_reward"]

TASKS: dict[str, Callable[..., Task]] = {
    AdditionTask.name: AdditionTask,
    MathAnswerTask.name: MathAnswerTask,
    VerboseAdditionTask.name: VerboseAdditionTask,
}

_FORMS = "'package.module:Name' (importable, or beside where winnow runs) or 'path/to/file.py:Name'"


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the ``module:Name`` form rather than being a registered name."""
    return ":" in name


def build_task(name: str, field: str = "task.name", **params: Any) -> Task:
    """The task registered as ``name``, or the class at import path ``name``, built with
    ``params`` (checked against its constructor's signature first).

    Raises :class:`DistillInputError` naming ``field`` (or ``task.params``) and the fix.
    """
    if is_import_path(name):
        constructor = load_object(name, field)
    elif name in TASKS:
        constructor = TASKS[name]
    else:
        raise DistillInputError(
            f"{field} {name!r} is neither a registered task ({', '.join(TASKS)}) nor an import "
            f"path; fix: pick a registered task, or name your task class as {_FORMS}"
        )
    if not callable(constructor):
        raise DistillInputError(f"{field} {name!r} is a {type(constructor).__name__}, not a class")
    signature = inspect.signature(constructor)
    try:
        signature.bind(**params)
    except TypeError as exc:
        takes = ", ".join(signature.parameters) or "no parameters"
        raise DistillInputError(
            f"task.params {sorted(params)} do not fit {name!r} ({exc}); it takes {takes}"
        ) from None
    task = constructor(**params)
    missing = [
        member for member in ("problems", "verify") if not callable(getattr(task, member, None))
    ]
    if missing:
        raise DistillInputError(
            f"{field} {name!r} built a {type(task).__name__} without {', '.join(missing)}; a task "
            "needs problems(split, count, seed) and verify(problem, response) (see "
            "winnow.distill.tasks.base.Task)"
        )
    return task


def load_reward(spec: str, field: str) -> Callable[[str, str, str], float]:
    """The function at import path ``spec``, checked to take (prompt, response, reference)."""
    function = load_object(spec, field)
    if not callable(function):
        raise DistillInputError(f"{field} {spec!r} is a {type(function).__name__}, not a function")
    try:
        inspect.signature(function).bind("prompt", "response", "reference")
    except TypeError as exc:
        raise DistillInputError(
            f"{field} {spec!r} cannot be called as f(prompt, response, reference) ({exc}); fix: "
            "give it those three parameters and return a float"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call decide
        pass
    return function


def load_object(spec: str, field: str) -> Any:
    """The object an import path names: ``package.module:Name`` or ``path/to/file.py:Name``.

    Raises :class:`DistillInputError` naming ``field`` for a malformed path, a module or file
    that cannot be loaded (with the error it raised) and a name the module lacks (listing what
    it has).
    """
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute.isidentifier():
        raise DistillInputError(
            f"{field} {spec!r} is not an import path; fix: write it as {_FORMS}"
        )
    module = _load_module(module_name, spec, field)
    if not hasattr(module, attribute):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise DistillInputError(
            f"{field} {spec!r}: {module_name} has no {attribute!r}; it defines "
            f"{', '.join(public) or 'nothing public'}"
        )
    return getattr(module, attribute)


def _load_module(module_name: str, spec: str, field: str):
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise DistillInputError(
                f"{field} {spec!r}: no file {path} (from {Path.cwd()}); fix: give the path of "
                "your .py file, relative to where winnow runs or absolute"
            )
        # One module per file path, registered so that pickling and a second load find it.
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"winnow_user_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise DistillInputError(
                f"{field} {spec!r}: running {path} raised {type(exc).__name__}: {exc}"
            ) from None
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.append(str(Path.cwd()))  # as `python -m` would: modules beside the user's files
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise DistillInputError(
            f"{field} {spec!r}: cannot import {module_name} ({type(exc).__name__}: {exc}); fix: "
            "make it importable (pip install your package, or run from the folder that holds "
            "it), or give a .py file path"
        ) from None
