"""Evaluation of a policy on held-out problems: greedy accuracy, length, accuracy by difficulty,
and the unbiased pass@k estimator for sampled evaluations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks import Problem, Task
from winnow.distill.tasks.base import answer_text, reward_of

__all__ = [
    "EvalResult",
    "SampledAnswers",
    "evaluate_greedy",
    "pass_at_k",
    "sample_answers",
]


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
            ok = reward_of(task, problem, response) >= 1.0
            correct.append(ok)
            buckets[problem.difficulty].append(ok)
    count = len(correct)
    return EvalResult(
        accuracy=sum(correct) / max(count, 1),
        mean_length=sum(lengths) / max(count, 1),
        by_difficulty={d: sum(v) / len(v) for d, v in buckets.items()},
        count=count,
    )


@dataclass(frozen=True)
class SampledAnswers:
    """``n`` sampled responses per problem, verified: ``correct [P]`` (the ``c`` of pass@k) and
    ``distinct [P]``, how many different answers
    (:func:`~winnow.distill.tasks.base.answer_text`) they gave: the diversity self-distillation
    is reported to lose."""

    correct: Tensor
    distinct: Tensor


def sample_answers(
    backend,
    task: Task,
    problems: Sequence[Problem],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    prompts_per_batch: int = 64,
) -> SampledAnswers:
    """Sample ``n`` responses per problem and verify them.

    Each chunk of ``prompts_per_batch`` problems is sampled with its own seed derived from
    ``seed``, so the result is a deterministic function of the weights and ``seed``.

    Shape:
        - Output: long tensors ``[P]`` in the order of ``problems``; ``correct`` in ``[0, n]``
          (``pass_at_k(n, correct, k).mean()`` is the pass@k of the set), ``distinct`` in
          ``[1, n]``.
    """
    correct, distinct = [], []
    for chunk_index, start in enumerate(range(0, len(problems), prompts_per_batch)):
        chunk = problems[start : start + prompts_per_batch]
        batch = backend.sample(
            [p.prompt for p in chunk],
            n=n,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed * 1_000_003 + chunk_index,
        )
        hits = torch.zeros(len(chunk), dtype=torch.long)
        answers: list[set[str]] = [set() for _ in chunk]
        for i, response in zip(batch.problem_index.tolist(), batch.responses, strict=True):
            hits[i] += reward_of(task, chunk[i], response) >= 1.0
            answers[i].add(answer_text(response))
        correct.append(hits)
        distinct.append(torch.tensor([len(a) for a in answers], dtype=torch.long))
    empty = torch.zeros(0, dtype=torch.long)
    return SampledAnswers(
        torch.cat(correct) if correct else empty, torch.cat(distinct) if distinct else empty
    )


def pass_at_k(n: int | Tensor, c: int | Tensor, k: int) -> Tensor:
    """Unbiased pass@k per problem from ``n`` samples of which ``c`` are correct.

    ``1 - C(n - c, k) / C(n, k)``: the chance that ``k`` samples drawn without replacement from
    the ``n`` contain a correct one (Chen et al. 2021). Computed in the paper's product form
    ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` (exactly 1 when ``n - c < k``), which never
    forms a binomial coefficient: those lose float64 exactness past ``n`` of about 60 and
    overflow past about 1000.

    Shape:
        - n: int or integer tensor ``[P]``, samples per problem; c: int or integer tensor
          ``[P]``, correct samples, ``0 <= c <= n``; they broadcast against each other.
        - k: int, ``1 <= k <= n`` for every problem.
        - Output: float64 tensor of the broadcast shape of ``n`` and ``c``, values in
          ``[0, 1]``; average it for the benchmark's pass@k.
    """
    samples, correct = torch.broadcast_tensors(torch.as_tensor(n), torch.as_tensor(c))
    for name, value in (("n", samples), ("c", correct)):
        if value.is_floating_point() or value.dtype == torch.bool:
            raise DistillInputError(
                f"{name} must be an int or an integer tensor (counts of samples), got {value.dtype}"
            )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DistillInputError(f"k must be an int >= 1, got {k!r}")
    if samples.numel() and k > samples.min():
        raise DistillInputError(
            f"k = {k} exceeds n = {int(samples.min())} samples for some problem; the unbiased "
            "estimator needs k <= n: sample more per problem or lower k"
        )
    if samples.numel() and ((correct < 0) | (correct > samples)).any():
        raise DistillInputError(
            "c must satisfy 0 <= c <= n for every problem, got c in "
            f"[{int(correct.min())}, {int(correct.max())}]; c counts the correct samples of n"
        )
    samples, correct = samples.double(), correct.double()
    width = int(correct.max()) if correct.numel() else 0
    offset = torch.arange(width, dtype=torch.float64, device=correct.device)
    denominator = (samples - correct + 1).unsqueeze(-1) + offset
    factor = torch.where(offset < correct.unsqueeze(-1), 1 - k / denominator, 1.0)
    return torch.where(samples - correct < k, 1.0, 1 - factor.prod(-1))
