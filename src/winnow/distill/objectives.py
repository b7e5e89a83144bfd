"""Training objectives: per-token losses, the one helper that reduces them, and OPD with TIP.

House rule: a loss returns one value per token, and :func:`reduce_token_loss` alone decides how
tokens are averaged (over all kept tokens, or per sequence first), so no objective hides a
normalisation choice. :func:`opd_loss` is one on-policy distillation step's loss on a rollout
batch: the trainer and the memory benchmark both call it, so what is measured is what trains.

RL with verifiable rewards (GRPO, Dr.GRPO, DAPO) and ACE are built from pure pieces here:
:func:`group_advantages` normalises rewards within each prompt's group of rollouts,
:func:`dynamic_sampling_mask` drops groups whose rewards are all equal (zero advantage, no
signal), :func:`ace_modulation` sharpens the penalty on confidently wrong rollouts,
:func:`clipped_policy_loss` is the per-token clipped ratio objective with separate low and high
clips, and :func:`k3_kl` is the per-token KL estimate to the reference model. :func:`grpo_loss`
composes them into one GRPO/DAPO/ACE step's loss on a rollout batch.
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
from winnow.distill.rollout import RolloutBatch
from winnow.distill.tokens import SelectorConfig, TokenStats, select_tokens, token_statistics

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
    "reduce_token_loss",
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
    ``sequence_weights [B]`` scales each rollout's per-token losses before the reduction
    (Paced's problem weights); ``per_token`` is returned unweighted. ``teacher_batch`` holds the
    same responses after the teacher's own prompts (:func:`~winnow.distill.rollout.with_prompts`,
    OPSDC); by default the teacher reads ``batch``.
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
    )
    kept = select_tokens(stats, selector, generator).to(student_rows.device)
    per_token = token_divergence(
        student_rows[kept], student_weight, teacher_rows[kept], teacher_weight, **divergence
    )
    weighted = per_token
    if sequence_weights is not None:
        weighted = per_token * sequence_weights.to(per_token)[sequence[kept]]
    loss = reduce_token_loss(weighted, sequence[kept], reduction)
    return OpdLoss(loss, per_token, stats, kept)


def group_advantages(
    rewards: Tensor, group: Tensor, scale_by_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std.

    A group is the rollouts of one prompt. ``scale_by_std=False`` is Dr.GRPO (Liu et al. 2025):
    dividing by the std up-weights groups that are nearly all right or all wrong, a difficulty
    bias. The std is the unbiased (Bessel-corrected) one, as ``torch.std`` and TRL compute it; a
    group of one rollout has std 0 and advantage 0. ``eps > 0`` keeps a zero-std group at 0.

    Shape:
        - rewards: ``[B]`` float or bool; group: ``[B]`` integer, any ids, in any order.
        - Output: ``[B]``, float (float32 for bool rewards), no gradient.

    Example: rewards ``[1, 0, 0, 0]`` in one group give ``[0.75, -0.25, -0.25, -0.25]`` with
    ``scale_by_std=False``, and those divided by ``0.5 + eps`` (std 0.5) with it.
    """
    if not eps > 0:
        raise DistillInputError(
            f"eps must be > 0 (a zero-std group would divide 0 by 0), got {eps!r}; default 1e-6"
        )
    values, inverse, size = _grouped(rewards, group)
    mean = _group_sum(values, inverse, size) / size
    centred = values - mean[inverse]
    if not scale_by_std:
        return centred
    squares = _group_sum(centred**2, inverse, size)
    std = (squares / (size - 1).clamp_min(1)).sqrt()
    return centred / (std[inverse] + eps)


def dynamic_sampling_mask(rewards: Tensor, group: Tensor) -> Tensor:
    """DAPO's dynamic sampling: keep only rollouts whose group has rewards that differ.

    With binary rewards this drops all-correct and all-wrong groups; in general it drops every
    group whose rewards are all equal, whose advantages are all zero and so give no gradient.

    Shape:
        - rewards: ``[B]`` float or bool; group: ``[B]`` integer.
        - Output: ``[B]`` bool, True = keep.
    """
    values, inverse, size = _grouped(rewards, group)
    groups = size.numel()
    low = values.new_full((groups,), torch.inf).scatter_reduce(0, inverse, values, "amin")
    high = values.new_full((groups,), -torch.inf).scatter_reduce(0, inverse, values, "amax")
    return (high > low)[inverse]


def _ace_multiplicative(advantages: Tensor, penalty: Tensor, alpha: float) -> Tensor:
    """``A (1 + alpha softplus(c))``: the penalty grows with confidence, by at least 1x."""
    return advantages * (1 + alpha * penalty)


def _ace_additive(advantages: Tensor, penalty: Tensor, alpha: float) -> Tensor:
    """``A - alpha softplus(c)``: a confidence term added to the penalty, independent of |A|."""
    return advantages - alpha * penalty


ACE_FORMS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "multiplicative": _ace_multiplicative,
    "additive": _ace_additive,
}
"""ACE form -> ``fn(advantages, softplus(confidence), alpha)``, applied to the modulated rows."""


def ace_modulation(
    advantages: Tensor,
    correct: Tensor,
    confidence: Tensor,
    alpha: float,
    form: Literal["multiplicative", "additive"] = "multiplicative",
) -> Tensor:
    """ACE: make the penalty on a wrong rollout grow with the policy's confidence in it.

    ``confidence`` is ``c_i = log pi_theta(y_i|x) - log pi_ref(y_i|x)`` summed over the
    rollout's response tokens, from log-probabilities the loop already has (the sampling-time
    policy and the reference), so it costs no forward pass. Only rows that are wrong *and* have
    a negative advantage change; every other row is returned bit for bit, and ``alpha = 0``
    returns ``advantages`` exactly (GRPO). The exact form was not recovered (REFERENCES), so two
    are offered through :data:`ACE_FORMS`:

    - ``"multiplicative"`` (default): ``A_i (1 + alpha softplus(c_i))``, scaling the penalty.
    - ``"additive"``: ``A_i - alpha softplus(c_i)``, shifting it; a wrong rollout in a group
      that is nearly all wrong (``A_i`` close to 0) is still pushed down by its confidence.

    softplus keeps the factor smooth and positive where ReLU would ignore every ``c_i < 0``
    (REFERENCES: softplus beat ReLU). The confidence enters as a constant, like every advantage.

    Shape:
        - advantages: ``[B]`` float; correct: ``[B]`` bool; confidence: ``[B]`` float.
        - Output: ``[B]``, the dtype of ``advantages``, no gradient through ``confidence``.
    """
    if form not in ACE_FORMS:
        raise DistillInputError(f"ACE form {form!r} is unknown; use one of {', '.join(ACE_FORMS)}")
    if not alpha >= 0:
        raise DistillInputError(f"alpha must be >= 0 (0 = plain GRPO), got {alpha!r}")
    _check_aligned(advantages=advantages, correct=correct, confidence=confidence)
    if correct.dtype != torch.bool:
        raise DistillInputError(
            f"correct must be a bool tensor (the verifier's verdict), got {correct.dtype}; "
            "pass rewards > 0 or the verifier's booleans"
        )
    penalty = torch.nn.functional.softplus(confidence.detach().to(advantages.dtype))
    modulated = ACE_FORMS[form](advantages, penalty, alpha)
    return torch.where(~correct & (advantages < 0), modulated, advantages)


def clipped_policy_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
) -> Tensor:
    """Per-token clipped ratio objective (PPO), with DAPO's separate high clip, as a loss.

    ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = exp(logp_new - logp_old)``.
    Its gradient is zero where the clip binds: ``r > 1 + eps_high`` with ``A > 0``, and
    ``r < 1 - eps_low`` with ``A < 0``. ``eps_high > eps_low`` (clip-higher) leaves
    low-probability tokens room to grow; ``eps_high = eps_low = 0.2`` is PPO and GRPO. Reduce
    the result with :func:`reduce_token_loss` (``"token"`` is DAPO's token-mean).

    Shape:
        - logp_new: ``[k]`` log-probabilities of the sampled tokens under the policy being
          trained (with grad); logp_old: ``[k]`` the same under the sampling policy (constant).
        - advantages: ``[k]`` per token, e.g. ``group_advantages(...)[sequence]`` (constant).
        - Output: ``[k]``, the loss at each token.
    """
    if not 0 <= eps_low < 1 or not eps_high >= 0:
        raise DistillInputError(
            f"clip ranges need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low!r}, "
            f"eps_high={eps_high!r}; DAPO uses 0.2 and 0.28"
        )
    _check_aligned(logp_new=logp_new, logp_old=logp_old, advantages=advantages)
    ratio = torch.exp(logp_new - logp_old.detach())
    advantages = advantages.detach()
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def k3_kl(logp_new: Tensor, logp_ref: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || reference) (Schulman 2020), as TRL's GRPO uses it.

    ``exp(r) - r - 1`` with ``r = logp_ref - logp_new`` at the sampled tokens: unbiased for the
    KL under the policy's samples, and >= 0 per token, 0 exactly where the two agree. Computed
    as ``expm1(r) - r``, the same value without the cancellation near ``r = 0``.

    Shape:
        - logp_new: ``[k]`` policy log-probabilities of the sampled tokens (with grad);
          logp_ref: ``[k]`` the reference model's (constant).
        - Output: ``[k]``, nats.
    """
    _check_aligned(logp_new=logp_new, logp_ref=logp_ref)
    log_ratio = logp_ref.detach() - logp_new
    return torch.expm1(log_ratio) - log_ratio


def _grouped(rewards: Tensor, group: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Float rewards ``[B]`` (no grad), each row's group ``[B]`` in 0..G-1, and group sizes."""
    if not isinstance(rewards, Tensor) or rewards.ndim != 1:
        raise DistillInputError(
            f"rewards must be a 1-D tensor, one reward per rollout, got {_shape_of(rewards)}"
        )
    shaped = isinstance(group, Tensor) and group.shape == rewards.shape
    if not shaped or group.is_floating_point() or group.dtype == torch.bool:
        raise DistillInputError(
            f"group must be an integer tensor of shape {tuple(rewards.shape)}, one per rollout, "
            f"got {_shape_of(group)}; pass RolloutBatch.problem_index"
        )
    values = rewards.detach()
    values = values if values.is_floating_point() else values.float()
    _, inverse = torch.unique(group, return_inverse=True)
    size = torch.bincount(inverse).to(values.dtype)
    return values, inverse, size


def _group_sum(values: Tensor, inverse: Tensor, size: Tensor) -> Tensor:
    return torch.zeros_like(size).index_add(0, inverse, values)


def _check_aligned(**tensors: Tensor) -> None:
    shapes = {name: _shape_of(value) for name, value in tensors.items()}
    first = next(iter(tensors.values()))
    ok = all(isinstance(value, Tensor) for value in tensors.values())
    if not ok or first.ndim != 1 or any(value.shape != first.shape for value in tensors.values()):
        raise DistillInputError(
            f"{', '.join(tensors)} must be equal-shape 1-D tensors, got {shapes}"
        )


def _shape_of(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__


@dataclass(frozen=True)
class GrpoLoss:
    """One batch's GRPO (with ACE) loss and how it was made.

    ``loss``: the scalar to back-propagate; ``per_token [k]``: the loss at the loss rows
    (:meth:`RolloutBatch.loss_rows`, row-major) of the kept rollouts, unreduced;
    ``advantages [B]``: the advantages used, after ACE, 0 for dropped rollouts;
    ``confidence [B]``: ACE's ``c_i = sum_t (logp_old - logp_ref)``, NaN where not computed
    (dropped rollouts, or no reference forward); ``kept_rollouts [B]`` bool: dynamic sampling's
    verdict.
    """

    loss: Tensor
    per_token: Tensor
    advantages: Tensor
    confidence: Tensor
    kept_rollouts: Tensor


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
        return GrpoLoss(loss, empty, advantages, confidence, kept_rollouts)

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
    return GrpoLoss(loss, per_token, advantages, confidence, kept_rollouts)


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
            f"{_shape_of(rewards)}; score every rollout with the task verifier"
        )
    if old_log_probs is None:
        return
    shaped = isinstance(old_log_probs, Tensor) and old_log_probs.shape == (rows,)
    if not shaped or not old_log_probs.is_floating_point():
        raise DistillInputError(
            f"old_log_probs must be a float tensor of shape ({rows},), one per loss row of the "
            f"whole batch (loss_rows()), got {_shape_of(old_log_probs)}; pass None when the "
            "batch gets a single update"
        )
