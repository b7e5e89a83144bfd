"""Math problems with a final answer, checked symbolically: ``\\boxed{1/2}`` equals ``0.5``.

String matching marks many correct answers wrong (``\\frac{1}{2}``, ``0.5``, ``1/2``), which
corrupts both rewards and accuracy; ``math_verify`` (Hugging Face) compares parsed expressions. When
it is not installed, a small sympy comparison of plain arithmetic expressions stands in, and
anything it cannot parse safely falls back to exact string equality.

The data file is JSON Lines, one problem per line::

    {"problem": "What is 1/4 + 1/4?", "answer": "\\\\frac{1}{2}"}
    {"problem": "...", "answer": "42", "difficulty": 3}

``difficulty`` is optional (default 0). Splits are a stable hash of the problem text.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from types import ModuleType

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.base import Problem, Split
from winnow.distill.tasks.problem_files import draw_problems, load_jsonl_problems

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "MathAnswerTask",
    "answers_equivalent",
    "last_boxed",
    "sympy_equivalent",
]

DEFAULT_PROMPT_TEMPLATE = (
    "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# LaTeX rewritten to sympy syntax, in order; only plain arithmetic survives _SAFE below.
_LATEX_TO_SYMPY: tuple[tuple[str, str], ...] = (
    (r"\\left|\\right|\\!|\\,|\\;|\$|\s", ""),
    (r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))"),
    (r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)"),
    (r"\\cdot|\\times", "*"),
    (r"\\pi", "pi"),
    (r"\{", "("),
    (r"\}", ")"),
)
# sympify evaluates its input, so only numbers, + - * /, parentheses, sqrt and pi reach it; no
# powers, so an answer like 9**9**9**9 cannot stall the check.
_SAFE = re.compile(r"(?:[0-9.+\-/()]|\*(?!\*)|sqrt|pi)+")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    >>> last_boxed(r"so \\boxed{1} then \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    """
    starts = [match.end() for match in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None


def sympy_equivalent(predicted: str, reference: str) -> bool:
    """Whether two LaTeX answers are equal as plain arithmetic (fractions, roots, pi) via sympy.

    Used when ``math_verify`` is not installed. Powers and other expressions outside that
    grammar are compared as normalised strings.
    """
    a, b = _to_sympy_syntax(predicted), _to_sympy_syntax(reference)
    if a == b:
        return True
    if not (_SAFE.fullmatch(a) and _SAFE.fullmatch(b)):
        return False
    import sympy

    try:
        return bool(sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0)
    except (sympy.SympifyError, TypeError, SyntaxError, ZeroDivisionError):
        return False


def answers_equivalent(predicted: str, reference: str) -> bool:
    """Whether answer ``predicted`` equals ``reference`` (both LaTeX or plain), symbolically."""
    checker = _math_verify()
    if checker is None:
        return sympy_equivalent(predicted, reference)
    gold = checker.parse(f"\\boxed{{{reference}}}")
    guess = checker.parse(f"\\boxed{{{predicted}}}")
    return bool(gold) and bool(guess) and bool(checker.verify(gold, guess))


class MathAnswerTask:
    """Problems from a JSONL file; a response is right if its last ``\\boxed{}`` equals the answer.

    Parameters
    ----------
    path : the JSONL file (read and validated at construction).
    prompt_template : format string with a ``{problem}`` field; the default asks for the final
        answer in ``\\boxed{}``, the convention of Qwen-style math models.
    """

    name = "math_answers"
    alphabet = None

    def __init__(self, path: str | Path, prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> None:
        try:
            prompt_template.format(problem="")
        except (KeyError, IndexError, ValueError) as exc:
            raise DistillInputError(
                f"prompt_template must be a format string whose only field is {{problem}}, got "
                f"{prompt_template!r} ({exc!r}); fix: double literal braces, e.g. \\boxed{{{{}}}}"
            ) from None
        self.path = Path(path)
        self.prompt_template = prompt_template
        self._problems = load_jsonl_problems(self.path, what="math answers file")

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` distinct problems of ``split``, in an order shuffled by ``seed``."""
        chosen = draw_problems(self._problems, split, count, seed, self.path)
        return [
            Problem(self.prompt_template.format(problem=p.prompt), p.answer, p.difficulty)
            for p in chosen
        ]

    def verify(self, problem: Problem, response: str) -> bool:
        """True when the response's last ``\\boxed{}`` is equivalent to the answer."""
        boxed = last_boxed(response)
        return boxed is not None and answers_equivalent(boxed, problem.answer)

    def __repr__(self) -> str:
        return f"MathAnswerTask(path={str(self.path)!r})"


@functools.cache
def _math_verify() -> ModuleType | None:
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


def _to_sympy_syntax(answer: str) -> str:
    for pattern, replacement in _LATEX_TO_SYMPY:
        answer = re.sub(pattern, replacement, answer)
    return answer
