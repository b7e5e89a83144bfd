"""What a verifiable task is: problems with a reference answer, and a verifier for responses.

Trainers and evaluators only see this interface, so a synthetic task (arithmetic, cheap enough to
train on a CPU in a minute) and a real one (math answers checked symbolically) are interchangeable.
Splits are decided per problem, never per draw, so train and test never share a problem however
many problems are drawn.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from winnow.distill.exceptions import DistillInputError

__all__ = [
    "SPLITS",
    "STOP_MARKERS",
    "Problem",
    "Split",
    "Task",
    "answer_text",
    "check_split",
    "reward_of",
    "split_of",
]

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")

# Where a response's answer ends: a newline, or the end-of-sequence string of a tokenizer when the
# response was decoded with special tokens kept (the char tokenizer's and common LLM ones).
STOP_MARKERS: tuple[str, ...] = ("\n", "<eos>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>")

# Share of problems assigned to the test split by :func:`split_of`.
_TEST_SHARE = 0.2


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer.

    ``difficulty`` is a task-defined integer (digit count for arithmetic; 0 when unknown), used
    to report accuracy per difficulty.
    """

    prompt: str
    answer: str
    difficulty: int


@runtime_checkable
class Task(Protocol):
    """A verifiable task: draws problems from a split and scores responses.

    Every task, the registered ones and yours (``task.name: package.module:Class``), has:

    - ``name``: a label for reports;
    - ``problems(split, count, seed)``: ``count`` :class:`Problem` of ``"train"`` or ``"test"``,
      the same list for the same arguments, the splits disjoint (:func:`split_of` hashes a
      problem's text into one);
    - ``verify(problem, response)``: the reward of ``response`` (the text generated after the
      prompt) in [0, 1]; a bool is fine. 1 counts as correct in accuracy and pass@k; ACE treats
      anything below 1 as an error.

    Optional: ``alphabet``, every character prompts and answers use, so that ``winnow distill
    sft`` can build a character tokenizer and a model from scratch (absent or None: start from a
    pretrained model, ``init_from``); ``demonstrations(split, count, seed)``, SFT targets when they
    differ from the answers (:class:`~winnow.distill.tasks.verbose.VerboseAdditionTask`);
    ``Problem.difficulty``, which the reports break accuracy down by.

    Examples: :class:`~winnow.distill.tasks.arithmetic.AdditionTask`,
    :class:`~winnow.distill.tasks.math_answers.MathAnswerTask`,
    :class:`~winnow.distill.tasks.jsonl.JsonlTask`, and docs/distill.md's multiplication.
    """

    name: str

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` problems of ``split``, the same list for the same arguments."""
        ...

    def verify(self, problem: Problem, response: str) -> bool | float:
        """The reward of ``response`` to ``problem``, in [0, 1] (True = 1)."""
        ...


def reward_of(task: Task, problem: Problem, response: str) -> float:
    """``task.verify(problem, response)`` as a float, checked to lie in [0, 1]."""
    reward = task.verify(problem, response)
    try:  # bools, ints, floats and their numpy kinds; a string is not a reward
        value = math.nan if isinstance(reward, str | bytes) else float(reward)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise DistillInputError(
            f"task {getattr(task, 'name', type(task).__name__)!r}: verify returned {reward!r} "
            "for a response; fix: return a reward in [0, 1] (or a bool)"
        )
    return value


def answer_text(response: str) -> str:
    """The response up to its first stop marker (newline or EOS string), whitespace-stripped.

    >>> answer_text("975<eos>12")
    '975'
    """
    end = min((i for i in (response.find(m) for m in STOP_MARKERS) if i >= 0), default=None)
    return response[:end].strip()


def split_of(key: str) -> Split:
    """The split a problem belongs to, from a stable hash of its canonical ``key``.

    About 20% of keys go to ``"test"``. The hash is SHA-256, so the assignment is identical across
    processes and Python versions (the built-in ``hash`` of a string is salted per process).
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") < _TEST_SHARE * 2**64 else "train"


def check_split(split: str, count: int) -> None:
    """Raise :class:`DistillInputError` unless ``split`` is a known split and ``count >= 0``."""
    if split not in SPLITS:
        raise DistillInputError(
            f"split must be one of {', '.join(SPLITS)}, got {split!r}; fix: pass 'train' or 'test'"
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DistillInputError(f"count must be an integer >= 0, got {count!r}")
