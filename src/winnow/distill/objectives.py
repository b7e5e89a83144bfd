"""Training objectives: per-token losses, the one helper that reduces them, and OPD with TIP.

House rule: a loss returns one value per token, and :func:`reduce_token_loss` alone decides how
tokens are averaged (over all kept tokens, or per sequence first), so no objective hides a
normalisation choice. :func:`opd_loss` is one on-policy distillation step's loss on a rollout
batch: the trainer and the memory benchmark both call it, so what is measured is what trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from winnow.distill.divergence import token_divergence
from winnow.distill.exceptions import DistillInputError
from winnow.distill.rollout import RolloutBatch
from winnow.distill.tokens import SelectorConfig, TokenStats, select_tokens, token_statistics

__all__ = ["REDUCTIONS", "OpdLoss", "opd_loss", "reduce_token_loss"]

HiddenFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _token_mean(values: Tensor, sequence: Tensor) -> Tensor:
    return values.mean()


def _sequence_mean(values: Tensor, sequence: Tensor) -> Tensor:
    """Average within each sequence, then over sequences: long answers weigh no more."""
    count = int(sequence.max()) + 1
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(
        0, sequence, values
    )
    sizes = torch.bincount(sequence, minlength=count)
    present = sizes > 0
    return (sums[present] / sizes[present].to(values.dtype)).mean()


REDUCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "token": _token_mean,
    "sequence": _sequence_mean,
}


def reduce_token_loss(
    values: Tensor, sequence: Tensor, how: Literal["token", "sequence"] = "token"
) -> Tensor:
    """Reduce per-token losses to the scalar that is back-propagated.

    Shape:
        values: [k] per-token loss; sequence: [k] long, the rollout each token belongs to.

    ``token`` averages over all k tokens (TRL's and the TIP paper's choice); ``sequence``
    averages within each rollout first. An empty selection gives an exact zero that still
    carries the graph, so a step with nothing kept is a no-op rather than a NaN.
    """
    if how not in REDUCTIONS:
        raise DistillInputError(f"reduction {how!r} is unknown; use one of {', '.join(REDUCTIONS)}")
    if values.shape != sequence.shape or values.dim() != 1:
        raise DistillInputError(
            f"values {tuple(values.shape)} and sequence {tuple(sequence.shape)} must be equal 1-D"
        )
    if values.numel() == 0:
        return values.sum()
    return REDUCTIONS[how](values, sequence)


@dataclass(frozen=True)
class OpdLoss:
    """One batch's OPD loss and how it was made.

    ``loss``: the scalar to back-propagate; ``per_token [k]``: divergence at the kept rows;
    ``stats``: entropy and divergence of every response row (no grad); ``kept [k]``: indices
    into those rows.
    """

    loss: Tensor
    per_token: Tensor
    stats: TokenStats
    kept: Tensor


def opd_loss(
    student: HiddenFn,
    student_weight: Tensor,
    teacher: HiddenFn,
    teacher_weight: Tensor,
    batch: RolloutBatch,
    selector: SelectorConfig,
    generator: torch.Generator,
    divergence: dict,
    selection_divergence: dict | None = None,
    reduction: Literal["token", "sequence"] = "token",
) -> OpdLoss:
    """On-policy distillation with TIP on one rollout batch.

    ``student`` and ``teacher`` map ``(input_ids, attention_mask, position_ids)`` to last hidden
    states ``[B, T, d]``; ``*_weight [V, d]`` are their output matrices over the shared
    vocabulary. Both decoders run once over the batch (the teacher without gradient). Every
    response row is scored chunk-wise without gradient (``selection_divergence`` keyword
    arguments of :func:`~winnow.distill.tokens.token_statistics`, default ``divergence``),
    ``selector`` keeps k rows, and only those rows reach the output projection with gradient
    (``divergence``: keyword arguments of :func:`~winnow.distill.divergence.token_divergence`).
    """
    rows = batch.loss_rows()
    if len(rows[0]) == 0:
        raise DistillInputError(
            "the rollout batch has no response tokens; raise rollout.max_new_tokens"
        )
    sequence, offset = batch.sequence_and_offset()
    inputs = (batch.input_ids, batch.attention_mask, batch.position_ids)
    with torch.no_grad():
        teacher_rows = teacher(*inputs)[rows]
    student_rows = student(*inputs)[rows]
    stats = token_statistics(
        student_rows.detach(),
        student_weight.detach(),
        teacher_rows,
        teacher_weight,
        sequence,
        offset,
        **(selection_divergence or divergence),
    )
    kept = select_tokens(stats, selector, generator).to(student_rows.device)
    per_token = token_divergence(
        student_rows[kept], student_weight, teacher_rows[kept], teacher_weight, **divergence
    )
    loss = reduce_token_loss(per_token, sequence[kept], reduction)
    return OpdLoss(loss, per_token, stats, kept)
