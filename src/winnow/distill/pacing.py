"""Paced: weight each problem by the student's pass rate, skip the ones with no signal, and
schedule the KL direction over training.

Paced (arXiv 2603.11178) observes that distillation gradients carry little signal on problems
the student always solves (nothing left to learn) and little coherent signal on problems it never
solves (the teacher's tokens are far off its distribution). It weights a problem with pass rate
``p`` by the Beta kernel ``w(p) = p^alpha (1 - p)^beta`` (default ``alpha = beta = 1``), which
vanishes at both ends and peaks at ``alpha / (alpha + beta)``. A problem of weight zero needs no
teacher forward pass at all, which is where the compute is saved.

Conventions
-----------
- Pass rates come from the rollouts the trainer already samples: ``n`` responses per problem,
  each scored by the task verifier, ``p = mean reward`` of that problem's responses.
- Problems are identified by any integer id (``RolloutBatch.problem_index``); per-problem outputs
  are ordered by sorted id, so ``torch.searchsorted(problems, problem_index)`` maps each rollout
  back to its problem's row.
- Rates and weights are float64, counts long; summaries are plain floats for ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from winnow.common.config import Config
from winnow.distill.divergence import DivergenceKind
from winnow.distill.exceptions import DistillInputError

__all__ = [
    "NORMALISATIONS",
    "KLSchedule",
    "pass_rate_weight",
    "pass_rates",
    "problem_weights",
    "skip_mask",
    "teacher_calls_saved",
    "weight_mass_by_bin",
]


def pass_rates(rewards: Tensor, problem_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-problem pass rate from the verifier's rewards of each rollout.

    Shape:
        - rewards: ``[B]`` bool or float in ``[0, 1]`` (1 = verified correct).
        - problem_index: ``[B]`` integer, the problem each rollout answers.
        - Output: ``(problems [P] long, rate [P] float64, count [P] long)``: the distinct problem
          ids in increasing order, the mean reward of each, and its number of rollouts.

    Example: rewards ``[1, 0, 1, 1]`` for problems ``[7, 7, 3, 3]`` give problems ``[3, 7]``,
    rate ``[1.0, 0.5]``, count ``[2, 2]``.
    """
    if not isinstance(rewards, Tensor) or rewards.ndim != 1:
        raise DistillInputError(
            f"rewards must be a 1-D tensor with one reward per rollout, got {_describe(rewards)}"
        )
    _check_index("problem_index", problem_index, rewards.shape[0])
    values = _check_unit_interval(
        "rewards", rewards.detach().double(), "pass rates are their means; rescale the rewards"
    )
    problems, inverse = torch.unique(problem_index.detach(), sorted=True, return_inverse=True)
    count = torch.bincount(inverse, minlength=problems.numel())
    sums = torch.zeros(problems.numel(), dtype=torch.float64, device=values.device)
    rate = sums.index_add(0, inverse, values) / count.to(torch.float64)
    return problems.long(), rate, count


def pass_rate_weight(p: Tensor | float, alpha: float = 1.0, beta: float = 1.0) -> Tensor | float:
    """Paced's Beta kernel ``w(p) = p^alpha (1 - p)^beta``.

    For ``alpha, beta > 0`` it is zero at ``p = 0`` and ``p = 1`` and largest at
    ``p = alpha / (alpha + beta)``; ``alpha = 0`` keeps never-solved problems out of the zero set
    (``0^0 = 1``), ``beta = 0`` likewise keeps mastered ones.

    Shape:
        - p: a float or a tensor of any shape, values in ``[0, 1]``.
        - Output: the type of ``p``; a tensor keeps its shape and floating dtype (float64 for an
          integer or bool tensor).
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not value >= 0:
            raise DistillInputError(
                f"{name} must be >= 0, got {value!r}; the default {name} = 1 is Paced's"
            )
    rate = torch.as_tensor(p)
    if not rate.is_floating_point():
        rate = rate.double()
    _check_unit_interval("p", rate, "pass the rates that pass_rates returns")
    weight = rate.pow(alpha) * (1 - rate).pow(beta)
    return weight if isinstance(p, Tensor) else weight.item()


def _mean_one(weight: Tensor) -> Tensor:
    """Nonzero weights average 1: the trained problems keep uniform distillation's loss scale."""
    trained = weight > 0
    if not trained.any():
        return weight
    return weight / weight[trained].mean()


def _sum_one(weight: Tensor) -> Tensor:
    """Weights sum to 1 over the batch: a distribution over problems."""
    total = weight.sum()
    return weight / total if total > 0 else weight


def _unnormalised(weight: Tensor) -> Tensor:
    return weight


NORMALISATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _mean_one,
    "sum": _sum_one,
    "none": _unnormalised,
}
"""How :func:`problem_weights` rescales ``w(p)`` over one batch; see its docstring."""


def problem_weights(
    rate: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    normalise: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Per-problem loss weights ``w(p)`` of one batch, rescaled by ``normalise``.

    The paper's batch normalisation was not recovered (see REFERENCES), so the choice is ours:

    - ``"mean"`` (default): divide by the mean over problems with nonzero weight, so the trained
      problems average weight 1. Raw ``w(p)`` is at most 0.25 for ``alpha = beta = 1`` and
      shrinks with how many problems sit near 0 or 1, which would silently scale the learning
      rate by batch difficulty; mean-one keeps the loss scale of uniform distillation on the
      problems actually trained, so a learning rate tuned without Paced carries over, and a
      batch whose live problems all share one pass rate trains exactly like uniform weighting.
      Skipped problems are left out of the mean: they contribute no loss either way.
    - ``"sum"``: weights sum to 1 (a distribution over the batch's problems); the loss scale
      then falls as the batch grows.
    - ``"none"``: raw ``w(p)``.

    A batch where every weight is zero (all problems mastered or all hopeless) returns zeros for
    every normalisation: nothing is trained and nothing is divided by zero.

    Shape:
        - rate: ``[P]`` pass rates in ``[0, 1]``.
        - Output: ``[P]``, the floating dtype of ``rate`` (float64 for an integer tensor).
    """
    if normalise not in NORMALISATIONS:
        raise DistillInputError(
            f"normalise {normalise!r} is unknown; use one of {', '.join(NORMALISATIONS)}"
        )
    if not isinstance(rate, Tensor) or rate.ndim != 1:
        raise DistillInputError(
            f"rate must be a 1-D tensor with one pass rate per problem, got {_describe(rate)}"
        )
    return NORMALISATIONS[normalise](pass_rate_weight(rate, alpha, beta))


class KLSchedule(Config):
    """Which divergence the distillation loss uses at each optimizer step.

    ``phases`` is a list of ``(kind, until_step)``: each kind applies from the previous phase's
    ``until_step`` (0 for the first) up to, not including, its own; the last phase has
    ``until_step = null`` and lasts to the end. Paced's best schedule, forward KL for the first
    ``s`` steps and reverse KL after, is ``[[forward_kl, s], [reverse_kl, null]]``.
    """

    phases: list[tuple[DivergenceKind, int | None]] = Field(
        default_factory=lambda: [("forward_kl", None)],
        min_length=1,
        description="[(kind, until_step), ...]: kind applies for steps before until_step; "
        "the last until_step is null (to the end)",
    )

    @field_validator("phases")
    @classmethod
    def _increasing_then_open(cls, phases: list[tuple[str, int | None]]):
        *bounded, (_, last) = phases
        if last is not None:
            raise ValueError(
                f"the last phase must have until_step null (it lasts to the end), got {last}; "
                "e.g. [[forward_kl, 100], [reverse_kl, null]]"
            )
        ends = [until for _, until in bounded]
        if any(until is None for until in ends):
            raise ValueError(f"only the last phase may have until_step null, got {phases}")
        if ends and (ends[0] < 1 or any(a >= b for a, b in pairwise(ends))):
            raise ValueError(f"until_step values must be >= 1 and strictly increasing, got {ends}")
        return phases

    def kind_at(self, step: int) -> DivergenceKind:
        """The divergence kind at optimizer step ``step`` (0 = the first step)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise DistillInputError(f"step must be an int >= 0 (0 = first step), got {step!r}")
        return next(kind for kind, until in self.phases if until is None or step < until)


def weight_mass_by_bin(rate: Tensor, weight: Tensor, bins: int = 5) -> dict[str, float]:
    """Share of the batch's total weight held by problems in each pass-rate bin.

    Bins split ``[0, 1]`` into ``bins`` equal widths; bin ``i`` holds ``i / bins <= p <
    (i + 1) / bins``, and the last bin includes ``p = 1``. Keys are
    ``weight_mass_p{low:g}-{high:g}``, e.g. ``weight_mass_p0.2-0.4``; values sum to 1, or are all
    0.0 when the total weight is 0.

    Shape:
        - rate, weight: ``[P]``, aligned (as :func:`pass_rates` and :func:`problem_weights`
          return them); weights >= 0.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise DistillInputError(f"bins must be an int >= 1, got {bins!r}")
    if not isinstance(rate, Tensor) or rate.ndim != 1 or rate.shape != weight.shape:
        raise DistillInputError(
            f"rate and weight must be 1-D tensors of equal shape, got {_describe(rate)} and "
            f"{_describe(weight)}; pass one pass rate and one weight per problem"
        )
    mass = _check_weights(weight)
    index = (rate.detach().double() * bins).floor().long().clamp(0, bins - 1)
    per_bin = torch.zeros(bins, dtype=torch.float64, device=mass.device).index_add(0, index, mass)
    total = per_bin.sum().item()
    shares = (per_bin / total).tolist() if total > 0 else [0.0] * bins
    return {
        f"weight_mass_p{i / bins:g}-{(i + 1) / bins:g}": share for i, share in enumerate(shares)
    }


def skip_mask(weights: Tensor) -> Tensor:
    """Problems that need no teacher call: their weight is exactly zero.

    Shape:
        - weights: ``[P]`` >= 0, as :func:`problem_weights` returns them.
        - Output: ``[P]`` bool, True = skip. For rollouts:
          ``skip_mask(weights)[torch.searchsorted(problems, problem_index)]``.
    """
    return _check_weights(weights) == 0


def teacher_calls_saved(skip: Tensor, count: Tensor) -> float:
    """Fraction of the batch's teacher work that skipping saves, in ``[0, 1]``.

    With ``count`` the rollouts per problem (from :func:`pass_rates`) it is the share of teacher
    sequence forwards saved; pass response tokens per problem instead for the share of teacher
    tokens. An empty batch saves 0.0.

    Shape:
        - skip: ``[P]`` bool, as :func:`skip_mask` returns it; count: ``[P]`` integer >= 0.
    """
    if skip.dtype != torch.bool or skip.ndim != 1 or skip.shape != count.shape:
        raise DistillInputError(
            f"skip must be a 1-D bool tensor aligned with count, got {_describe(skip)} and "
            f"{_describe(count)}; pass skip_mask(weights) and the count from pass_rates"
        )
    if count.is_floating_point() or (count.numel() and count.min() < 0):
        raise DistillInputError(
            "count must hold integers >= 0 (rollouts or tokens per problem), got "
            f"{_describe(count)}"
        )
    total = int(count.sum())
    return int(count[skip].sum()) / total if total else 0.0


def _check_unit_interval(name: str, values: Tensor, fix: str) -> Tensor:
    if values.numel() and not (values.isfinite().all() and values.min() >= 0 and values.max() <= 1):
        raise DistillInputError(
            f"{name} must lie in [0, 1], got values in [{values.min().item()}, "
            f"{values.max().item()}]; {fix}"
        )
    return values


def _check_weights(weight: Tensor) -> Tensor:
    values = weight.detach().double()
    if values.numel() and not (values.isfinite().all() and values.min() >= 0):
        raise DistillInputError(
            f"weights must be finite and >= 0, got values in [{values.min().item()}, "
            f"{values.max().item()}]; pass what problem_weights returns"
        )
    return values


def _check_index(name: str, index: Tensor, rows: int) -> None:
    shaped = isinstance(index, Tensor) and index.shape == (rows,)
    if not shaped or index.is_floating_point() or index.dtype == torch.bool:
        raise DistillInputError(
            f"{name} must be an integer tensor of shape ({rows},), one per rollout, got "
            f"{_describe(index)}; take it from RolloutBatch.problem_index"
        )


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
