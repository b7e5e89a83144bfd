"""What a verifiable task is: problems with a reference answer, and a verifier for responses.

Trainers and evaluators only see this interface, so a synthetic task (arithmetic, cheap enough to
train on a CPU in a minute) and a real one (math answers checked symbolically) are interchangeable.
Splits are decided per problem, never per draw, so train and test never share a problem however
many problems are drawn.
"""

from __future__ import annotations

import hashlib
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
    """A verifiable task: draws problems from a split and checks responses.

    ``alphabet`` lists every character prompts and answers use, so a character tokenizer can be
    built for it (``None`` when the task needs a real tokenizer, e.g. free-form math text).
    """

    name: str
    alphabet: str | None

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """``count`` problems of ``split``, the same list for the same arguments."""
        ...

    def verify(self, problem: Problem, response: str) -> bool:
        """Whether ``response`` (generated text after the prompt) answers ``problem`` correctly."""
        ...


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
