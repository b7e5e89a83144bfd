"""Synthetic addition: a verifiable task small enough to train and distill on a CPU.

The answer is written least-significant digit first by default, so each output digit depends only
on digits already seen plus a carry: a 2-3 layer model learns it in about a minute, and a weaker
student fails in a structured way (dropped carries) that distillation can then fix.

>>> task = AdditionTask(digits=(3,))
>>> problem = task.problems("train", 1, seed=0)[0]
>>> problem.prompt.endswith("="), problem.difficulty
(True, 3)
>>> task.verify(problem, problem.answer + "<eos>junk")
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.base import Problem, Split, answer_text, check_split, split_of

__all__ = ["AdditionTask", "addition_answer"]


def addition_answer(a: int, b: int, reverse_answer: bool = True, carry: bool = True) -> str:
    """The digits of ``a + b``, least-significant first when ``reverse_answer``.

    ``carry=False`` adds each digit column mod 10 and drops every carry: the systematic,
    confidently learnt error of a student for ACE and forward-vs-reverse KL experiments.

    >>> addition_answer(123, 456), addition_answer(999, 1, reverse_answer=False)
    ('975', '1000')
    >>> addition_answer(58, 67, reverse_answer=False, carry=False)
    '15'
    """
    if carry:
        digits = str(a + b)
    else:
        width = max(len(str(a)), len(str(b)))
        columns = zip(str(a).zfill(width), str(b).zfill(width), strict=True)
        digits = "".join(str((int(x) + int(y)) % 10) for x, y in columns)
    return digits[::-1] if reverse_answer else digits


class AdditionTask:
    """``"a+b="`` prompts whose operands both have ``n`` digits, ``n`` drawn from ``digits``.

    Parameters
    ----------
    digits : digit counts to draw from, uniformly per problem (each >= 1). Operands have exactly
        ``n`` digits (no leading zeros); for ``n = 1`` they range over 0-9.
    reverse_answer : write the sum least-significant digit first (``"123+456="`` -> ``"975"``).
    carry : False drops every carry from the reference answers (a deliberately wrong task to
        train a confidently wrong student on; verify still compares with these answers).
    pad_operands : write both operands zero-padded to ``max(digits)`` digits (``"003+045="``),
        so every prompt has one layout and each column sits at a fixed position. Tiny models
        trained on a mixed pool of unpadded operands plateau (they must locate each column by
        counting from ``+``); padded, a mixed pool trains like a single digit count. The
        answer is the plain sum either way.

    The split of a problem is a hash of its unordered operand pair, so ``a+b`` and ``b+a`` are
    always in the same split and no test problem is a commuted training problem. Problems are
    drawn independently (with replacement) from the split, so any ``count`` is valid.
    ``difficulty`` is the operand digit count.
    """

    name = "addition"
    alphabet = "0123456789+="

    def __init__(
        self,
        digits: Sequence[int] = (3,),
        reverse_answer: bool = True,
        carry: bool = True,
        pad_operands: bool = False,
    ) -> None:
        digits = tuple(digits)
        if not digits or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in digits
        ):
            raise DistillInputError(
                f"digits must be a non-empty sequence of integers >= 1, got {digits!r}; "
                "fix: pass e.g. digits=(3,) or digits=(1, 2, 3)"
            )
        self.digits = digits
        self.reverse_answer = bool(reverse_answer)
        self.carry = bool(carry)
        self.pad_operands = bool(pad_operands)

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` problems of ``split`` drawn with ``random.Random(seed)``."""
        check_split(split, count)
        rng = random.Random(seed)
        problems: list[Problem] = []
        while len(problems) < count:
            n = rng.choice(self.digits)
            low, high = (0 if n == 1 else 10 ** (n - 1)), 10**n - 1
            a, b = rng.randint(low, high), rng.randint(low, high)
            if split_of(f"{min(a, b)}+{max(a, b)}") != split:
                continue
            answer = addition_answer(a, b, self.reverse_answer, self.carry)
            width = max(self.digits) if self.pad_operands else 0
            prompt = f"{a:0{width}d}+{b:0{width}d}="
            problems.append(Problem(prompt=prompt, answer=answer, difficulty=n))
        return problems

    def verify(self, problem: Problem, response: str) -> bool:
        """Exact match of the response up to its first newline or EOS string, stripped."""
        return answer_text(response) == problem.answer

    def __repr__(self) -> str:
        return (
            f"AdditionTask(digits={self.digits!r}, reverse_answer={self.reverse_answer!r}, "
            f"carry={self.carry!r}, pad_operands={self.pad_operands!r})"
        )
