"""A task and reward functions defined outside the package, as a user would write them: the
import-path tests load them by ``tests.distill.custom_tasks:Name`` and by file path."""

import random

from winnow.distill.tasks.base import Problem, answer_text, split_of


class MultiplicationTask:
    """``a*b=`` with the product as the answer; ``digits`` per operand."""

    name = "multiplication"
    alphabet = "0123456789*="

    def __init__(self, digits: int = 1) -> None:
        self.digits = digits

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        rng = random.Random(f"{seed}-{split}")
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        pool = [
            Problem(f"{a}*{b}=", str(a * b), self.digits)
            for a in range(low, high + 1)
            for b in range(low, high + 1)
            if split_of(f"{a}*{b}") == split
        ]
        return [rng.choice(pool) for _ in range(count)]

    def verify(self, problem: Problem, response: str) -> bool:
        return answer_text(response) == problem.answer


def quarter(prompt: str, response: str, reference: str) -> float:
    """The same reward for every rollout: what a run that used it shows as its train reward."""
    return 0.25


def not_a_number(prompt: str, response: str, reference: str) -> float:
    return float("nan")


def first_digit_right(prompt: str, response: str, reference: str) -> float:
    """Partial credit, as a JSONL task's own verifier: 1 for the whole answer, 0.5 for its
    first digit."""
    answer = answer_text(response)
    return 1.0 if answer == reference else 0.5 * (answer[:1] == reference[:1])
