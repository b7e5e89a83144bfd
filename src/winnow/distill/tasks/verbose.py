"""Verbose addition: a base model that rambles unless told to be concise (the OPSDC toy).

OPSDC (on-policy self-distillation for reasoning compression) needs a model whose plain answers
are long and whose answers after a "be concise" instruction are short, both correct. Here that
model is made by supervised fine-tuning on :meth:`VerboseAdditionTask.demonstrations`: half the
examples are a plain prompt with a verbose answer (a restatement of the problem, filler, optional
column-by-column scratch work, then ``so <answer>``), half the instruction plus the prompt with
a concise answer (usually the bare answer; see :func:`concise_answer`). Self-distillation then
has something to compress, and the verifier reads the final answer of either form, so accuracy
and length under the plain prompt are both measurable.

>>> task = VerboseAdditionTask(digits=(2,), instruction="Be concise. ")
>>> problem = Problem(prompt="12+34=", answer="64", difficulty=2)
>>> task.verify(problem, "we need 12 plus 34. hmm. so 64<eos>"), task.verify(problem, "64")
(True, True)
>>> verbose_answer(12, 34, random.Random(0))
'the sum of 12 and 34. ones 2+4=6. tens 1+3=4. so 64'
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.arithmetic import AdditionTask, addition_answer
from winnow.distill.tasks.base import Problem, Split, answer_text

__all__ = [
    "CONCISE_INSTRUCTION",
    "VerboseAdditionTask",
    "concise_answer",
    "final_answer",
    "verbose_answer",
]

# The instruction of the OPSDC paper, verbatim: the default teacher instruction.
CONCISE_INSTRUCTION = (
    "Solve the following math problem concisely and correctly. Be direct — avoid unnecessary "
    "elaboration, redundant steps, or restating the problem. Focus only on the key reasoning "
    "steps needed to reach the answer. "
)

_RESTATEMENTS = ("we need {a} plus {b}. ", "the sum of {a} and {b}. ", "add {a} and {b}. ")
_FILLERS = ("hmm. ", "ok. ", "let me see. ", "right. ", "well. ")
_COLUMNS = ("ones", "tens", "hundreds", "thousands", "digit")
# The final answer is the digit run that ends the response, after a space or at its start.
_FINAL = re.compile(r"(?:^|\s)(\d+)$")


def verbose_answer(
    a: int,
    b: int,
    rng: random.Random,
    reverse_answer: bool = True,
    p_restate: float = 0.85,
    p_scratch: float = 0.5,
    max_fillers: int = 2,
) -> str:
    """A rambling but correct answer to ``a+b``, drawn with ``rng``; ends in ``so <answer>``.

    Parts, in order: a restatement (probability ``p_restate``), 0 to ``max_fillers`` filler
    phrases, column-by-column scratch work least-significant first (probability ``p_scratch``;
    a carried one appears as ``+1``), then ``so`` and the answer as :func:`addition_answer`
    writes it. Every part ends in ``". "``, so no part but the last ends in a digit.
    """
    parts = []
    if rng.random() < p_restate:
        parts.append(rng.choice(_RESTATEMENTS).format(a=a, b=b))
    parts += rng.sample(_FILLERS, rng.randint(0, max_fillers))
    if rng.random() < p_scratch:
        parts += _scratch_work(a, b)
    return "".join(parts) + "so " + addition_answer(a, b, reverse_answer)


def concise_answer(
    a: int, b: int, rng: random.Random, reverse_answer: bool = True, p_detail: float = 0.15
) -> str:
    """A terse correct answer to ``a+b``: usually the bare answer, never filler.

    A restatement and the scratch work each appear with probability ``p_detail``, followed by
    ``so <answer>``; with neither, the answer alone. A concise model thus still knows how to
    continue a restatement or scratch work (it prefers to skip them), so a self-teacher reading a
    verbose prefix after the instruction predicts sensible tokens there, not noise.

    >>> concise_answer(12, 34, random.Random(3)), concise_answer(12, 34, random.Random(0))
    ('64', 'ones 2+4=6. tens 1+3=4. so 64')
    """
    text = verbose_answer(a, b, rng, reverse_answer, p_detail, p_detail, max_fillers=0)
    return text.removeprefix("so ")


def final_answer(response: str) -> str | None:
    """The digits that end ``response`` (cut at its first stop marker), or None.

    Accepts both forms: ``"so 64"`` after any text, and a bare ``"64"``. The digits must
    follow a space or start the response, so scratch work such as ``"1+3=4"`` is no answer.

    >>> final_answer("ok. so 579<eos>9"), final_answer("579"), final_answer("tens 1+3=4")
    ('579', '579', None)
    """
    match = _FINAL.search(answer_text(response))
    return match.group(1) if match else None


class VerboseAdditionTask:
    """``"a+b="`` prompts (``n``-digit operands, ``n`` from ``digits``) answered verbosely by
    default and tersely after ``instruction``.

    Parameters
    ----------
    digits : operand digit counts, as in :class:`AdditionTask` (same problems, same splits).
    instruction : the text a concise prompt starts with; every character must be in
        :attr:`alphabet`. The default is the OPSDC paper's (:data:`CONCISE_INSTRUCTION`, 210
        characters); a short one (``"Be concise. "``) keeps CPU runs fast.
    reverse_answer : answers least-significant digit first, as in :class:`AdditionTask`.
    instructed_share : share of :meth:`demonstrations` that are instructed (terse).
    concise_detail : in instructed demonstrations, the probability of a restatement and of
        scratch work (:func:`concise_answer`); 0 makes every instructed answer bare.

    :meth:`problems` gives plain prompts and reference answers; :meth:`verify` accepts the
    final answer of a verbose or a terse response (:func:`final_answer`).
    """

    name = "verbose_addition"
    # Enough to spell the verbose answers and the paper's instruction (em dash included).
    alphabet = string.digits + "+=" + string.ascii_lowercase + string.ascii_uppercase + " .,:—-"

    def __init__(
        self,
        digits: Sequence[int] = (2,),
        instruction: str = CONCISE_INSTRUCTION,
        reverse_answer: bool = True,
        instructed_share: float = 0.5,
        concise_detail: float = 0.15,
    ) -> None:
        self._addition = AdditionTask(digits=digits, reverse_answer=reverse_answer)
        unknown = (
            sorted(set(instruction) - set(self.alphabet)) if isinstance(instruction, str) else None
        )
        if not instruction or unknown:
            raise DistillInputError(
                f"instruction must be a non-empty string over the task's alphabet, got "
                f"{instruction!r} (characters outside it: {unknown}); fix: use letters, digits, "
                f"spaces and {' .,:—-'!r}"
            )
        for name, value in (
            ("instructed_share", instructed_share),
            ("concise_detail", concise_detail),
        ):
            if not 0 <= value <= 1:
                raise DistillInputError(f"{name} must be in [0, 1], got {value!r}")
        self.digits = self._addition.digits
        self.instruction = instruction
        self.reverse_answer = bool(reverse_answer)
        self.instructed_share = float(instructed_share)
        self.concise_detail = float(concise_detail)

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` plain problems of ``split``: the prompts and answers of AdditionTask."""
        return self._addition.problems(split, count, seed)

    def verify(self, problem: Problem, response: str) -> bool:
        """Whether the response's final answer (:func:`final_answer`) is the reference answer."""
        return final_answer(response) == problem.answer

    def instructed(self, problems: Sequence[Problem]) -> list[Problem]:
        """The same problems with :attr:`instruction` before each prompt."""
        return [Problem(self.instruction + p.prompt, p.answer, p.difficulty) for p in problems]

    def demonstrations(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` supervised examples whose ``answer`` is the target text to imitate.

        A share ``instructed_share`` (drawn per example) is the instruction + prompt with a
        :func:`concise_answer`; the rest are the plain prompt with a :func:`verbose_answer`.
        """
        rng = random.Random(seed)
        examples = []
        for problem in self.problems(split, count, seed):
            a, b = (int(x) for x in problem.prompt.rstrip("=").split("+"))
            if rng.random() < self.instructed_share:
                text = concise_answer(a, b, rng, self.reverse_answer, self.concise_detail)
                prompt = self.instruction + problem.prompt
            else:
                text, prompt = verbose_answer(a, b, rng, self.reverse_answer), problem.prompt
            examples.append(Problem(prompt, text, problem.difficulty))
        return examples

    def __repr__(self) -> str:
        return (
            f"VerboseAdditionTask(digits={self.digits!r}, instruction={self.instruction!r}, "
            f"reverse_answer={self.reverse_answer!r}, instructed_share={self.instructed_share!r}, "
            f"concise_detail={self.concise_detail!r})"
        )


def _scratch_work(a: int, b: int) -> list[str]:
    """One ``"<column> x+y=s. "`` part per digit column, least significant first."""
    width = max(len(str(a)), len(str(b)))
    top, bottom = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    parts, carry = [], 0
    for i, (x, y) in enumerate(zip(top, bottom, strict=True)):
        total = int(x) + int(y) + carry
        plus_carry = "+1" if carry else ""
        column = _COLUMNS[min(i, len(_COLUMNS) - 1)]
        parts.append(f"{column} {x}+{y}{plus_carry}={total}. ")
        carry = total // 10
    return parts
