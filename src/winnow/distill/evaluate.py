"""Evaluation of a policy on held-out problems: greedy accuracy, length, accuracy by difficulty."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from winnow.distill.tasks import Problem, Task

__all__ = ["EvalResult", "evaluate_greedy"]


@dataclass(frozen=True)
class EvalResult:
    """Greedy accuracy over ``count`` problems, mean response length in tokens, and accuracy
    per difficulty bucket (digit count for addition)."""

    accuracy: float
    mean_length: float
    by_difficulty: dict[int, float]
    count: int

    def as_metrics(self, prefix: str = "eval_") -> dict[str, float]:
        """Flat, JSON-ready metrics: ``eval_accuracy``, ``eval_mean_length``, ``eval_acc_d3``..."""
        metrics = {f"{prefix}accuracy": self.accuracy, f"{prefix}mean_length": self.mean_length}
        metrics |= {f"{prefix}acc_d{d}": acc for d, acc in sorted(self.by_difficulty.items())}
        return metrics


def evaluate_greedy(
    backend, task: Task, problems: Sequence[Problem], max_new_tokens: int, batch_size: int = 256
) -> EvalResult:
    """Decode every problem greedily with ``backend`` and verify each answer with ``task``.

    ``backend`` is a rollout backend (:mod:`winnow.distill.rollout`); greedy decoding makes the
    score a deterministic function of the weights, so evaluations are comparable across steps.
    """
    correct, lengths, buckets = [], [], defaultdict(list)
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        batch = backend.sample(
            [p.prompt for p in chunk], n=1, temperature=0.0, max_new_tokens=max_new_tokens
        )
        lengths += batch.response_lengths().tolist()
        for problem, response in zip(chunk, batch.responses, strict=True):
            ok = task.verify(problem, response)
            correct.append(ok)
            buckets[problem.difficulty].append(ok)
    count = len(correct)
    return EvalResult(
        accuracy=sum(correct) / max(count, 1),
        mean_length=sum(lengths) / max(count, 1),
        by_difficulty={d: sum(v) / len(v) for d, v in buckets.items()},
        count=count,
    )
