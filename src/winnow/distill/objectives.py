"""Training objectives: per-token losses, the one helper that reduces them, and OPD with TIP.

House rule: a loss returns one value per token, and :func:`reduce_token_loss` alone decides how
tokens are averaged (over all kept tokens, or per sequence first), so no objective hides a
normalisation choice. :func:`opd_loss` is one on-policy distillation step's loss on a rollout
batch: the trainer and the memory benchmark both call it, so what is measured is what trains.

RL with verifiable rewards (GRPO, Dr.GRPO, DAPO) and ACE: :func:`grpo_loss` composes the pure
pieces of :mod:`winnow.distill.policy_gradient` (re-exported here) into one GRPO/DAPO/ACE
step's loss on a rollout batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from winnow.distill.divergence import token_divergence
from winnow.distill.exceptions import DistillInputError
from winnow.distill.logprobs import token_log_probs
from winnow.distill.policy_gradient import (
    ACE_FORMS,
    ace_modulation,
    clip_binds,
    clipped_policy_loss,
    describe_shape,
    dynamic_sampling_mask,
    group_advantages,
    k3_kl,
)
from winnow.distill.rollout import RolloutBatch
from winnow.distill.tokens import (
    SelectorConfig,
    TokenStats,
    select_tokens,
    token_statistics,
    token_weights,
)

__all__ = [
    "ACE_FORMS",
    "REDUCTIONS",
    "GrpoLoss",
    "OpdLoss",
    "ace_modulation",
    "clipped_policy_loss",
    "dynamic_sampling_mask",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "opd_loss",
    "opsa_loss",
    "reduce_token_loss",
    "sampled_log_probs",
]

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
    sequence_weights: Tensor | None = None,
    teacher_batch: RolloutBatch | None = None,
) -> OpdLoss:
    """On-policy distillation with TIP on one rollout batch.

    ``student`` and ``teacher`` map ``(input_ids, attention_mask, position_ids)`` to last hidden
    states ``[B, T, d]``; ``*_weight [V, d]`` are their output matrices over the shared
    vocabulary. Both decoders run once over the batch (the teacher without gradient). Every
    response row is scored chunk-wise without gradient (``selection_divergence`` keyword
    arguments of :func:`~winnow.distill.tokens.token_statistics`, default ``divergence``),
    ``selector`` keeps k rows, and only those rows reach the output projection with gradient
    (``divergence``: keyword arguments of :func:`~winnow.distill.divergence.token_divergence`).
    ``selector.weighting`` scales each kept row's loss
    (:func:`~winnow.distill.tokens.token_weights`) and ``sequence_weights [B]`` each rollout's
    (Paced's problem weights), before the reduction; ``per_token`` is returned unweighted.
    ``teacher_batch`` holds the same responses after the teacher's own prompts
    (:func:`~winnow.distill.rollout.with_prompts`, OPSDC); by default the teacher reads ``batch``.
    """
    rows = batch.loss_rows()
    if len(rows[0]) == 0:
        raise DistillInputError(
            "the rollout batch has no response tokens; raise rollout.max_new_tokens"
        )
    sequence, offset = batch.sequence_and_offset()
    inputs = (batch.input_ids, batch.attention_mask, batch.position_ids)
    teacher_batch = teacher_batch or batch
    with torch.no_grad():
        teacher_inputs = (
            teacher_batch.input_ids,
            teacher_batch.attention_mask,
            teacher_batch.position_ids,
        )
        teacher_rows = teacher(*teacher_inputs)[teacher_batch.loss_rows()]
    student_rows = student(*inputs)[rows]
    stats = token_statistics(
        student_rows.detach(),
        student_weight.detach(),
        teacher_rows,
        teacher_weight,
        sequence,
        offset,
        **(selection_divergence or divergence),
        targets=batch.input_ids[rows[0], rows[1] + 1] if selector.weighting != "none" else None,
    )
    kept = select_tokens(stats, selector, generator).to(student_rows.device)
    per_token = token_divergence(
        student_rows[kept], student_weight, teacher_rows[kept], teacher_weight, **divergence
    )
    weighted = per_token
    if selector.weighting != "none":
        weighted = per_token * token_weights(stats, kept, selector).to(per_token)
    if sequence_weights is not None:
        weighted = per_token * sequence_weights.to(per_token)[sequence[kept]]
    loss = reduce_token_loss(weighted, sequence[kept], reduction)
    return OpdLoss(loss, per_token, stats, kept)


@dataclass(frozen=True)
class GrpoLoss:
    """One batch's GRPO (with ACE) loss and how it was made.

    ``loss``: the scalar to back-propagate; ``per_token [k]``: the loss at the loss rows
    (:meth:`RolloutBatch.loss_rows`, row-major) of the kept rollouts, unreduced;
    ``advantages [B]``: the advantages used, after ACE, 0 for dropped rollouts;
    ``confidence [B]``: ACE's ``c_i = sum_t (logp_old - logp_ref)``, NaN where not computed
    (dropped rollouts, or no reference forward); ``kept_rollouts [B]`` bool: dynamic sampling's
    verdict; ``ratio [k]``: ``pi_new / pi_old`` at those rows (1 on a batch's first update);
    ``clipped [k]`` bool: where the clip binds (:func:`clip_binds`).
    """

    loss: Tensor
    per_token: Tensor
    advantages: Tensor
    confidence: Tensor
    kept_rollouts: Tensor
    ratio: Tensor
    clipped: Tensor


def grpo_loss(
    policy: HiddenFn,
    policy_weight: Tensor,
    reference: HiddenFn,
    reference_weight: Tensor,
    batch: RolloutBatch,
    rewards: Tensor,
    old_log_probs: Tensor | None = None,
    alpha_ace: float = 0.0,
    ace_form: Literal["multiplicative", "additive"] = "multiplicative",
    kl_beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    scale_by_std: bool = True,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    reduction: Literal["token", "sequence"] = "token",
) -> GrpoLoss:
    """GRPO with DAPO's clip-higher and dynamic sampling, optional k3 KL, and ACE, on one batch.

    ``policy`` and ``reference`` map ``(input_ids, attention_mask, position_ids)`` to last hidden
    states ``[B, T, d]``; ``*_weight [V, d]`` are their output matrices. The rollouts of one
    prompt (``batch.problem_index``) form a group; groups whose ``rewards [B]`` are all equal
    are dropped before any forward pass (:func:`dynamic_sampling_mask`), and if none is left the
    loss is an exact zero that still carries ``policy_weight``'s graph. Advantages come from
    :func:`group_advantages` (``scale_by_std=False`` is Dr.GRPO). The policy scores the sampled
    tokens once with gradient (:func:`~winnow.distill.logprobs.token_log_probs` at
    ``temperature``); ``old_log_probs [K]`` (one per loss row of the whole batch) are the
    sampling policy's, and ``None`` means this is the batch's only update, so they equal the
    current values, detached.

    The reference runs once, without gradient, and only when something reads it: ACE
    (``alpha_ace > 0``) or the KL penalty (``kl_beta > 0``); with both 0 it is never called,
    so plain GRPO costs one forward pass. ACE's confidence is built from values already at hand
    (``logp_old`` and ``logp_ref``) and modulates the negative advantages of wrong rollouts
    (reward < 1) through :func:`ace_modulation`. Per token the loss is
    ``clipped_policy_loss(logp_new, logp_old, A) + kl_beta * k3_kl(logp_new, logp_ref)``,
    reduced by :func:`reduce_token_loss` (``"token"`` is DAPO's token-mean).
    """
    _check_grpo_settings(alpha_ace, ace_form, kl_beta, eps_low, eps_high, reduction)
    rows = batch.loss_rows()
    _check_grpo_inputs(batch, rewards, old_log_probs, len(rows[0]))
    group = batch.problem_index.to(rewards.device)
    kept_rollouts = dynamic_sampling_mask(rewards, group)
    advantages = torch.where(kept_rollouts, group_advantages(rewards, group, scale_by_std), 0.0)
    confidence = torch.full_like(advantages, torch.nan)
    kept = kept_rollouts.nonzero().squeeze(1)
    if kept.numel() == 0:
        empty = policy_weight.new_zeros(
            0, dtype=torch.promote_types(policy_weight.dtype, torch.float32)
        )
        loss = policy_weight[:0].sum().to(empty.dtype)
        none = empty.new_zeros(0, dtype=torch.bool)
        return GrpoLoss(loss, empty, advantages, confidence, kept_rollouts, empty, none)

    kept_batch = batch.select(kept)
    batch_idx, pos_idx = kept_batch.loss_rows()
    sequence = kept.to(batch_idx.device)[batch_idx]
    targets = kept_batch.input_ids[batch_idx, pos_idx + 1]
    inputs = (kept_batch.input_ids, kept_batch.attention_mask, kept_batch.position_ids)
    settings = {"temperature": temperature, "chunk_size": chunk_size}
    hidden = policy(*inputs)[batch_idx, pos_idx]
    logp_new = token_log_probs(hidden, policy_weight, targets, **settings)
    if old_log_probs is None:
        logp_old = logp_new.detach()
    else:
        logp_old = old_log_probs.detach()[kept_rollouts.to(rows[0].device)[rows[0]]].to(logp_new)
    logp_ref = None
    if alpha_ace > 0 or kl_beta > 0:
        with torch.no_grad():
            reference_hidden = reference(*inputs)[batch_idx, pos_idx]
            logp_ref = token_log_probs(reference_hidden, reference_weight, targets, **settings)
        sums = torch.zeros_like(confidence).index_add(
            0, sequence.to(confidence.device), (logp_old - logp_ref).to(confidence)
        )
        confidence = torch.where(kept_rollouts, sums, torch.nan)
        correct = rewards.detach() >= 1
        advantages = ace_modulation(
            advantages, correct, confidence.nan_to_num(0.0), alpha_ace, ace_form
        )

    token_advantages = advantages.to(logp_new).detach()[sequence.to(advantages.device)]
    per_token = clipped_policy_loss(logp_new, logp_old, token_advantages, eps_low, eps_high)
    if kl_beta > 0:
        per_token = per_token + kl_beta * k3_kl(logp_new, logp_ref)
    loss = reduce_token_loss(per_token, sequence, reduction)
    ratio = torch.exp(logp_new.detach() - logp_old)
    clipped = clip_binds(ratio, token_advantages, eps_low, eps_high)
    return GrpoLoss(loss, per_token, advantages, confidence, kept_rollouts, ratio, clipped)


def opsa_loss(
    policy: HiddenFn,
    policy_weight: Tensor,
    batch: RolloutBatch,
    advantage: float = -1.0,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    reduction: Literal["token", "sequence"] = "token",
) -> tuple[Tensor, Tensor]:
    """The OPSA control (arXiv 2608.31046): policy gradient with one fixed ``advantage`` on
    every sampled response token and no teacher, ``-advantage * log pi(token)`` per token.

    With ``advantage < 0`` it lowers the probability of whatever the student sampled, the part
    of the on-policy distillation signal that OPSA reports carries most of its effect; an arm
    of it separates what the teacher adds. Returns ``(loss, per_token [K])`` over every loss row.
    """
    batch_idx, pos_idx = batch.loss_rows()
    if len(batch_idx) == 0:
        raise DistillInputError(
            "the rollout batch has no response tokens; raise rollout.max_new_tokens"
        )
    hidden = policy(batch.input_ids, batch.attention_mask, batch.position_ids)[batch_idx, pos_idx]
    targets = batch.input_ids[batch_idx, pos_idx + 1]
    logp = token_log_probs(hidden, policy_weight, targets, temperature, chunk_size)
    per_token = -advantage * logp
    return reduce_token_loss(per_token, batch_idx.to(per_token.device), reduction), per_token


def sampled_log_probs(
    policy: HiddenFn,
    policy_weight: Tensor,
    batch: RolloutBatch,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """``[K]`` log-probabilities of the sampled tokens at every loss row of ``batch``, without
    gradient: the sampling policy's, kept as ``old_log_probs`` for the later updates of a batch
    (``grpo.updates_per_batch > 1``), whose ratio and clip they make act."""
    batch_idx, pos_idx = batch.loss_rows()
    targets = batch.input_ids[batch_idx, pos_idx + 1]
    with torch.no_grad():
        hidden = policy(batch.input_ids, batch.attention_mask, batch.position_ids)
        return token_log_probs(
            hidden[batch_idx, pos_idx], policy_weight, targets, temperature, chunk_size
        )


def _check_grpo_settings(
    alpha_ace: float,
    ace_form: str,
    kl_beta: float,
    eps_low: float,
    eps_high: float,
    reduction: str,
) -> None:
    checks = (
        ("alpha_ace", alpha_ace, alpha_ace >= 0, ">= 0 (0 = plain GRPO)"),
        ("ace_form", ace_form, ace_form in ACE_FORMS, f"one of {', '.join(ACE_FORMS)}"),
        ("kl_beta", kl_beta, kl_beta >= 0, ">= 0 (0 = no KL penalty, no reference pass)"),
        ("eps_low", eps_low, 0 <= eps_low < 1, "in [0, 1); DAPO uses 0.2"),
        ("eps_high", eps_high, eps_high >= 0, ">= 0; DAPO uses 0.28"),
        ("reduction", reduction, reduction in REDUCTIONS, f"one of {', '.join(REDUCTIONS)}"),
    )
    for name, value, valid, allowed in checks:
        if not valid:
            raise DistillInputError(f"{name} must be {allowed}, got {value!r}")


def _check_grpo_inputs(
    batch: RolloutBatch, rewards: Tensor, old_log_probs: Tensor | None, rows: int
) -> None:
    if rows == 0:
        raise DistillInputError(
            "the rollout batch has no response tokens; raise rollout.max_new_tokens"
        )
    size = batch.input_ids.shape[0]
    if not isinstance(rewards, Tensor) or rewards.shape != (size,):
        raise DistillInputError(
            f"rewards must be a tensor of shape ({size},), one per rollout of the batch, got "
            f"{describe_shape(rewards)}; score every rollout with the task verifier"
        )
    if old_log_probs is None:
        return
    shaped = isinstance(old_log_probs, Tensor) and old_log_probs.shape == (rows,)
    if not shaped or not old_log_probs.is_floating_point():
        raise DistillInputError(
            f"old_log_probs must be a float tensor of shape ({rows},), one per loss row of the "
            f"whole batch (loss_rows()), got {describe_shape(old_log_probs)}; pass None when the "
            "batch gets a single update"
        )
