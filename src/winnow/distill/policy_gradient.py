"""The pure pieces of RL with verifiable rewards (GRPO, Dr.GRPO, DAPO) and ACE, per token or
per rollout, which :func:`winnow.distill.objectives.grpo_loss` composes into one step's loss.

:func:`group_advantages` normalises rewards within each prompt's group of rollouts,
:func:`dynamic_sampling_mask` drops groups whose rewards are all equal (zero advantage, no
signal), :func:`ace_modulation` sharpens the penalty on confidently wrong rollouts,
:func:`clipped_policy_loss` is the per-token clipped ratio objective with separate low and high
clips, and :func:`k3_kl` is the per-token KL estimate to the reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from winnow.distill.exceptions import DistillInputError

__all__ = [
    "ACE_FORMS",
    "ace_modulation",
    "clip_binds",
    "clipped_policy_loss",
    "describe_shape",
    "dynamic_sampling_mask",
    "group_advantages",
    "k3_kl",
]


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


def clip_binds(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """Where :func:`clipped_policy_loss` has zero gradient because the clip binds: ``r > 1 +
    eps_high`` with ``A > 0``, or ``r < 1 - eps_low`` with ``A < 0`` (TRL's ``clip_ratio``).

    Shape: ratio, advantages ``[k]``; output ``[k]`` bool.
    """
    return ((ratio > 1 + eps_high) & (advantages > 0)) | ((ratio < 1 - eps_low) & (advantages < 0))


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
            f"rewards must be a 1-D tensor, one reward per rollout, got {describe_shape(rewards)}"
        )
    shaped = isinstance(group, Tensor) and group.shape == rewards.shape
    if not shaped or group.is_floating_point() or group.dtype == torch.bool:
        raise DistillInputError(
            f"group must be an integer tensor of shape {tuple(rewards.shape)}, one per rollout, "
            f"got {describe_shape(group)}; pass RolloutBatch.problem_index"
        )
    values = rewards.detach()
    values = values if values.is_floating_point() else values.float()
    _, inverse = torch.unique(group, return_inverse=True)
    size = torch.bincount(inverse).to(values.dtype)
    return values, inverse, size


def _group_sum(values: Tensor, inverse: Tensor, size: Tensor) -> Tensor:
    return torch.zeros_like(size).index_add(0, inverse, values)


def _check_aligned(**tensors: Tensor) -> None:
    shapes = {name: describe_shape(value) for name, value in tensors.items()}
    first = next(iter(tensors.values()))
    ok = all(isinstance(value, Tensor) for value in tensors.values())
    if not ok or first.ndim != 1 or any(value.shape != first.shape for value in tensors.values()):
        raise DistillInputError(
            f"{', '.join(tensors)} must be equal-shape 1-D tensors, got {shapes}"
        )


def describe_shape(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__
