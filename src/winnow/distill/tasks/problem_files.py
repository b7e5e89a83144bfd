"""Problems read from JSON Lines files, with errors that name the line and the field.

Shared by :class:`~winnow.distill.tasks.math_answers.MathAnswerTask` (fields ``problem`` and
``answer``) and :class:`~winnow.distill.tasks.jsonl.JsonlTask` (fields you name).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from winnow.common.exceptions import DataNotFoundError
from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.base import Problem, Split, check_split, split_of

__all__ = ["draw_problems", "load_jsonl_problems"]


def load_jsonl_problems(
    path: str | Path,
    prompt_field: str = "problem",
    answer_field: str = "answer",
    what: str = "problems file",
) -> list[Problem]:
    """The problems of a JSONL file: ``prompt_field`` (text), ``answer_field`` (text or number)
    and an optional integer ``difficulty`` per line; blank lines are skipped.

    Raises :class:`DataNotFoundError` when the file is missing and :class:`DistillInputError`
    naming the line number and field for a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"{what} {path} does not exist; fix: pass the path of a JSONL file with "
            f"{prompt_field!r} and {answer_field!r} fields"
        )
    problems = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                where = f"{path}:{number}"
                problems.append(_parse_record(line, where, prompt_field, answer_field))
    if not problems:
        raise DistillInputError(f"{what} {path} holds no problems")
    return problems


def _parse_record(line: str, where: str, prompt_field: str, answer_field: str) -> Problem:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DistillInputError(
            f"{where}: not valid JSON ({exc.msg}); fix: one JSON object per line"
        ) from None
    if not isinstance(record, dict):
        raise DistillInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    fields = {prompt_field: (str,), answer_field: (str, int, float)}
    for field, types in fields.items():
        value = record.get(field)
        if isinstance(value, bool) or not isinstance(value, types):
            raise DistillInputError(
                f"{where}: field {field!r} must be a {' or '.join(t.__name__ for t in types)}, "
                f"got {value!r}; fix: add it to the line, or name the field that holds it"
            )
    difficulty = record.get("difficulty", 0)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise DistillInputError(
            f"{where}: field 'difficulty' must be an integer, got {difficulty!r}"
        )
    return Problem(str(record[prompt_field]), str(record[answer_field]), difficulty)


def draw_problems(
    problems: list[Problem], split: Split, count: int, seed: int, source: Path
) -> list[Problem]:
    """``count`` distinct problems of ``split`` (a stable hash of each prompt) from those of
    file ``source``, in an order shuffled by ``seed``."""
    check_split(split, count)
    pool = [p for p in problems if split_of(p.prompt) == split]
    if count > len(pool):
        raise DistillInputError(
            f"count={count} but the {split!r} split of {source} has {len(pool)} problems; "
            f"fix: ask for at most {len(pool)} (task.train_problems / task.test_problems)"
        )
    return random.Random(seed).sample(pool, count)
