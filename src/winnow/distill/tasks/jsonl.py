"""Your own problems from a JSONL file, checked by a built-in verifier or your own function.

``task: {kind: jsonl, path: problems.jsonl, prompt_field: question, answer_field: answer,
verifier: numeric}`` trains on a data set without writing a task class. One JSON object per
line; ``difficulty`` (an integer) is optional and feeds the per-difficulty accuracy of the
reports. Splits are a stable hash of the prompt, as for every task (about 20% test).

Verifiers (each reads the response up to its first stop marker,
:func:`~winnow.distill.tasks.base.answer_text`, unless said otherwise):

- ``exact``: that text equals the reference (both whitespace-stripped);
- ``numeric``: its last number equals the reference number (relative tolerance 1e-6, thousands
  commas ignored), so "The answer is 1,024." matches ``1024``;
- ``math_verify``: the last ``\\boxed{}`` of the whole response (else the text) is equivalent to
  the reference as mathematics (Hugging Face ``math_verify`` when installed, else sympy);
- ``regex``: ``pattern`` is searched in the whole response and its ``answer`` group (else group 1,
  else the match) must equal the reference;
- ``"package.module:function"`` or ``"path/to/file.py:function"``: your function, called as
  ``function(prompt, response, reference)``, returning a reward in [0, 1] (a bool is fine).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.base import Problem, Split, answer_text
from winnow.distill.tasks.math_answers import answers_equivalent, last_boxed
from winnow.distill.tasks.problem_files import draw_problems, load_jsonl_problems

__all__ = ["VERIFIERS", "JsonlTask"]

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _exact(response: str, reference: str, pattern: re.Pattern | None) -> bool:
    return answer_text(response) == reference.strip()


def _numeric(response: str, reference: str, pattern: re.Pattern | None) -> bool:
    found = _NUMBER.findall(answer_text(response))
    wanted = _NUMBER.fullmatch(reference.strip())
    if not found or wanted is None:
        return False
    guess, truth = (float(text.replace(",", "")) for text in (found[-1], wanted.group()))
    return math.isclose(guess, truth, rel_tol=1e-6, abs_tol=1e-12)


def _math(response: str, reference: str, pattern: re.Pattern | None) -> bool:
    boxed = last_boxed(response)
    return answers_equivalent(answer_text(response) if boxed is None else boxed, reference)


def _regex(response: str, reference: str, pattern: re.Pattern | None) -> bool:
    match = pattern.search(response)
    if match is None:
        return False
    group = "answer" if "answer" in pattern.groupindex else (1 if pattern.groups else 0)
    return (match.group(group) or "").strip() == reference.strip()


VERIFIERS: dict[str, Callable[[str, str, re.Pattern | None], bool]] = {
    "exact": _exact,
    "numeric": _numeric,
    "math_verify": _math,
    "regex": _regex,
}


class JsonlTask:
    """Problems of a JSONL file, verified by a name of :data:`VERIFIERS` or a function.

    Parameters
    ----------
    path : the JSONL file (read and validated at construction).
    prompt_field, answer_field : the fields holding the prompt and the reference answer.
    verifier : a key of :data:`VERIFIERS`, or an already loaded ``function(prompt, response,
        reference) -> reward in [0, 1]`` (``task.verifier: "module:function"`` in a config).
    pattern : the regular expression of the ``regex`` verifier.
    """

    alphabet = None  # free text needs the model's own tokenizer

    def __init__(
        self,
        path: str | Path,
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        verifier: str | Callable[[str, str, str], float] = "exact",
        pattern: str | None = None,
    ) -> None:
        if isinstance(verifier, str) and verifier not in VERIFIERS:
            raise DistillInputError(
                f"task.verifier {verifier!r} is not one of {', '.join(VERIFIERS)}; fix: pick one "
                "of those, or name your function as 'package.module:function'"
            )
        if (verifier == "regex") != (pattern is not None):
            raise DistillInputError(
                "task.pattern goes with task.verifier 'regex' (and it needs one); fix: set both "
                "or neither"
            )
        try:
            self.pattern = None if pattern is None else re.compile(pattern)
        except re.error as exc:
            raise DistillInputError(f"task.pattern {pattern!r} is not a regex ({exc})") from None
        self.path, self.verifier = Path(path), verifier
        self.name = f"jsonl {self.path.name}"
        self._problems = load_jsonl_problems(self.path, prompt_field, answer_field)

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` distinct problems of ``split``, in an order shuffled by ``seed``."""
        return draw_problems(self._problems, split, count, seed, self.path)

    def verify(self, problem: Problem, response: str) -> float:
        if callable(self.verifier):
            return self.verifier(problem.prompt, response, problem.answer)
        return float(VERIFIERS[self.verifier](response, problem.answer, self.pattern))

    def __repr__(self) -> str:
        return f"JsonlTask(path={str(self.path)!r}, verifier={self.verifier!r})"
