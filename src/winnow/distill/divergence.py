"""Per-token teacher-student divergences at chosen rows, chunked so no ``[K x V]`` tensor exists.

On-policy distillation compares the student's and the teacher's next-token distributions at the
response positions of sampled rollouts. With a real vocabulary (V ~ 150k) the logits of those K
rows dominate memory, so :func:`token_divergence` takes the final hidden states and the output
(lm_head) weights and computes logits one chunk of rows at a time: in the forward pass, and again
in the backward pass, where each chunk is differentiated with autograd and dropped. Liger-Kernel's
``LigerFusedLinearJSDLoss`` saves memory the same way but computes gradients in the forward;
recomputing instead keeps the formulas plain torch and lets the caller weight or mask the
per-token values afterwards. :func:`dense_divergence` is the readable full-logits reference the
chunked path is tested against.

Conventions
-----------
- Values are in nats, one per row; reduction is the caller's step.
- ``temperature`` divides both logits before the log-softmax.
- The log-softmax runs in float32, or in float64 when any input is float64; bfloat16 and float16
  inputs are upcast, and the returned values have that compute dtype.
- ``"forward_kl"`` is KL(teacher || student), mode-covering; ``"reverse_kl"`` is
  KL(student || teacher), mode-seeking; ``"jsd"`` is the generalized Jensen-Shannon divergence
  exactly as TRL's ``GKDTrainer.generalized_jsd_loss`` defines it (Agarwal et al. 2024, Eq. 1):
  ``beta = 0`` is forward KL, ``beta = 1`` reverse KL, and in between, with the mixture
  ``m = beta * teacher + (1 - beta) * student``,
  ``beta * KL(teacher || m) + (1 - beta) * KL(student || m)``. The endpoints are TRL's special
  cases, not limits: the mixture form tends to 0 as beta tends to 0 or 1.
- The teacher is a constant: its inputs never receive a gradient, even when they are the very
  tensors the student uses (self-distillation with a shared output weight).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import reduce
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from winnow.distill.exceptions import DistillInputError

__all__ = [
    "DIVERGENCES",
    "DivergenceKind",
    "check_floating",
    "check_settings",
    "compute_dtype",
    "dense_divergence",
    "forward_kl",
    "generalized_jsd",
    "head_log_probs",
    "reverse_kl",
    "row_chunks",
    "token_divergence",
    "validate_token_inputs",
]

Divergence = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
DivergenceKind = Literal["forward_kl", "reverse_kl", "jsd"]
"""The names of :data:`DIVERGENCES`, for configs (a test keeps the two equal)."""


def forward_kl(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """KL(teacher || student) = ``sum_v q_v (log q_v - log p_v)``; ``beta`` is unused.

    Its gradient w.r.t. the student logits is ``p - q``: every token the teacher likes pulls.

    Shape:
        - student_logp, teacher_logp: ``(*, V)`` log-probabilities.
        - Output: ``(*)``, nats.
    """
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def reverse_kl(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """KL(student || teacher) = ``sum_v p_v (log p_v - log q_v)``; ``beta`` is unused.

    Mode-seeking: tokens the student already gives no mass barely contribute.

    Shape:
        - student_logp, teacher_logp: ``(*, V)`` log-probabilities.
        - Output: ``(*)``, nats.
    """
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def generalized_jsd(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """TRL's generalized JSD: forward KL at ``beta = 0``, reverse KL at ``beta = 1``, else the
    ``beta``-weighted KLs of teacher and student to ``m = beta * teacher + (1 - beta) * student``.

    At ``beta = 0.5`` it is the symmetric JSD, bounded by ``ln 2``. Swapping student and teacher
    while replacing ``beta`` by ``1 - beta`` leaves the value unchanged.

    Shape:
        - student_logp, teacher_logp: ``(*, V)`` log-probabilities.
        - Output: ``(*)``, nats.
    """
    if beta == 0:
        return forward_kl(student_logp, teacher_logp)
    if beta == 1:
        return reverse_kl(student_logp, teacher_logp)
    mixture_logp = torch.logaddexp(student_logp + math.log1p(-beta), teacher_logp + math.log(beta))
    teacher_to_mixture = forward_kl(mixture_logp, teacher_logp)  # KL(teacher || m)
    student_to_mixture = reverse_kl(student_logp, mixture_logp)  # KL(student || m)
    return beta * teacher_to_mixture + (1 - beta) * student_to_mixture


DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
}
"""Divergence name (as configs spell it) -> ``fn(student_logp, teacher_logp, beta) -> [N]``."""


def dense_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence from full logits: the reference :func:`token_divergence` must match.

    Differentiable w.r.t. ``student_logits``; ``teacher_logits`` is detached.

    Shape:
        - student_logits, teacher_logits: ``(*, V)``, any floating dtype.
        - Output: ``(*)``, nats, float32 (float64 when an input is float64).
    """
    check_settings(kind, beta, temperature)
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        check_floating(name, logits, min_ndim=1)
    if student_logits.shape != teacher_logits.shape:
        raise DistillInputError(
            f"student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}; compare the two "
            "models at the same positions over the same vocabulary"
        )
    dtype = compute_dtype(student_logits, teacher_logits)
    student_logp = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    teacher_logp = torch.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    return DIVERGENCES[kind](student_logp, teacher_logp, beta)


def token_divergence(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token divergence at K chosen rows, computed from hidden states ``chunk_size`` rows at a
    time so that peak extra memory is ``O(chunk_size * V)``, in the forward and the backward.

    Row ``k`` compares ``softmax(student_hidden[k] @ student_weight.T / temperature)`` with the
    teacher's distribution at the same row; under next-token alignment these are the hidden
    states whose *next* token is a response token. Only the four inputs are saved for backward,
    which recomputes each chunk's logits. Gradients reach ``student_hidden`` and
    ``student_weight`` (also when the weight is tied to the input embedding); teacher inputs are
    constants. Not twice differentiable.

    Args:
        student_hidden: final hidden states (after the last norm) of the student at the K rows.
        student_weight: the student's output weight, ``model.get_output_embeddings().weight``.
        teacher_hidden, teacher_weight: the same for the teacher, over the same vocabulary.
        kind: a key of :data:`DIVERGENCES`.
        beta: the JSD interpolation in ``[0, 1]``; only ``"jsd"`` reads it.
        temperature: divides both logits, ``> 0``.
        chunk_size: rows per logits chunk, ``>= 1``.

    Shape:
        - student_hidden: ``(K, d_s)``; student_weight: ``(V, d_s)``.
        - teacher_hidden: ``(K, d_t)``; teacher_weight: ``(V, d_t)``.
        - Output: ``(K)``, nats, float32 (float64 when an input is float64); gradients have
          their inputs' dtypes.

    Example::

        rows = hidden[batch_idx, pos_idx]                       # (K, d)
        loss = token_divergence(rows, lm_head.weight, t_rows, t_lm_head.weight).mean()
    """
    heads = (student_hidden, student_weight, teacher_hidden, teacher_weight)
    validate_token_inputs(*heads, kind, beta, temperature, chunk_size)
    return _ChunkedDivergence.apply(
        student_hidden,
        student_weight,
        teacher_hidden.detach(),
        teacher_weight.detach(),
        DIVERGENCES[kind],
        float(beta),
        float(temperature),
        int(chunk_size),
    )


def head_log_probs(
    hidden: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T / temperature)`` in float32 (float64 for float64 inputs).

    The matmul itself runs in the compute dtype: bfloat16 logits lose the small differences
    between large logits that the divergence is made of.

    Shape:
        - hidden: ``(N, d)``; weight: ``(V, d)``.
        - Output: ``(N, V)`` log-probabilities.
    """
    dtype = compute_dtype(hidden, weight)
    logits = hidden.to(dtype) @ weight.to(dtype).T
    return torch.log_softmax(logits / temperature, dim=-1)


def validate_token_inputs(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: str,
    beta: float,
    temperature: float,
    chunk_size: int,
) -> None:
    """Raise :class:`DistillInputError` naming the argument unless :func:`token_divergence`
    would accept these inputs (shared with :func:`winnow.distill.tokens.token_statistics`)."""
    check_settings(kind, beta, temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DistillInputError(
            f"chunk_size must be an int >= 1, got {chunk_size!r}; 1024 rows suits most vocabularies"
        )
    tensors = {
        "student_hidden": student_hidden,
        "student_weight": student_weight,
        "teacher_hidden": teacher_hidden,
        "teacher_weight": teacher_weight,
    }
    for name, tensor in tensors.items():
        check_floating(name, tensor, min_ndim=2, max_ndim=2)
    for side, hidden, weight in (
        ("student", student_hidden, student_weight),
        ("teacher", teacher_hidden, teacher_weight),
    ):
        if hidden.shape[1] != weight.shape[1]:
            raise DistillInputError(
                f"{side}_hidden has width {hidden.shape[1]} but {side}_weight is "
                f"{tuple(weight.shape)}; pass the final hidden states (after the last norm) and "
                "the same model's output weight, shape (V, d)"
            )
    if student_hidden.shape[0] != teacher_hidden.shape[0]:
        raise DistillInputError(
            f"student_hidden has {student_hidden.shape[0]} rows but teacher_hidden has "
            f"{teacher_hidden.shape[0]}; gather both at the same response positions"
        )
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise DistillInputError(
            f"student_weight covers {student_weight.shape[0]} tokens but teacher_weight covers "
            f"{teacher_weight.shape[0]}; slice both to the shared tokenizer's vocabulary, "
            "e.g. weight[:len(tokenizer)], after checking the tokenizers match"
        )


class _ChunkedDivergence(torch.autograd.Function):
    """Forward: values chunk by chunk, saving only the inputs. Backward: recompute and
    differentiate one chunk at a time, accumulating the weight gradient in the compute dtype."""

    @staticmethod
    def forward(
        ctx,
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        divergence: Divergence,
        beta: float,
        temperature: float,
        chunk_size: int,
    ):
        ctx.save_for_backward(student_hidden, student_weight, teacher_hidden, teacher_weight)
        ctx.settings = (divergence, beta, temperature, chunk_size)
        dtype = compute_dtype(student_hidden, student_weight, teacher_hidden, teacher_weight)
        student_weight, teacher_weight = student_weight.to(dtype), teacher_weight.to(dtype)
        values = student_hidden.new_empty(student_hidden.shape[0], dtype=dtype)
        for rows in row_chunks(student_hidden.shape[0], chunk_size):
            values[rows] = divergence(
                head_log_probs(student_hidden[rows], student_weight, temperature),
                head_log_probs(teacher_hidden[rows], teacher_weight, temperature),
                beta,
            )
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values):
        student_hidden, student_weight, teacher_hidden, teacher_weight = ctx.saved_tensors
        divergence, beta, temperature, chunk_size = ctx.settings
        dtype = compute_dtype(student_hidden, student_weight, teacher_hidden, teacher_weight)
        teacher_weight = teacher_weight.to(dtype)

        def values_of(rows: slice, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            teacher_logp = head_log_probs(teacher_hidden[rows], teacher_weight, temperature)
            return divergence(head_log_probs(hidden, weight, temperature), teacher_logp, beta)

        grads = recompute_input_grads(
            student_hidden, student_weight, grad_values, ctx.needs_input_grad[:2], dtype,
            chunk_size, values_of,
        )  # fmt: skip
        return (*grads, None, None, None, None, None, None)


def recompute_input_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    grad_values: torch.Tensor,
    needs: tuple[bool, bool],
    dtype: torch.dtype,
    chunk_size: int,
    values_of: Callable[[slice, torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward of every chunked head function: gradients of ``sum(grad_values * values)``.

    ``values_of(rows, hidden_chunk, weight)`` recomputes the per-row values of one chunk from
    the output matrix in ``dtype``; each chunk's graph is built, differentiated and freed before
    the next, so no ``[K x V]`` tensor exists. ``needs`` says which of (hidden [K, d],
    weight [V, d]) want a gradient; the other comes back as None. The weight gradient is
    accumulated in ``dtype`` and returned in the weight's own dtype.
    """
    need_hidden, need_weight = needs
    work_weight = weight.detach().to(dtype).requires_grad_(need_weight)
    grad_hidden = torch.zeros_like(hidden) if need_hidden else None
    grad_weight = torch.zeros_like(work_weight) if need_weight else None
    for rows in row_chunks(hidden.shape[0], chunk_size):
        chunk = hidden[rows].detach().requires_grad_(need_hidden)
        with torch.enable_grad():
            values = values_of(rows, chunk, work_weight)
        wanted = [tensor for tensor in (chunk, work_weight) if tensor.requires_grad]
        grads = iter(torch.autograd.grad(values, wanted, grad_values[rows]))
        if need_hidden:
            grad_hidden[rows] = next(grads)
        if need_weight:
            grad_weight += next(grads)
    if need_weight:
        grad_weight = grad_weight.to(weight.dtype)
    return grad_hidden, grad_weight


def row_chunks(rows: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``chunk_size``: the unit of every chunked pass."""
    return (slice(start, start + chunk_size) for start in range(0, rows, chunk_size))


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when any input is: log-softmax never runs in half precision."""
    return reduce(torch.promote_types, (tensor.dtype for tensor in tensors), torch.float32)


def check_settings(kind: str, beta: float, temperature: float) -> None:
    """Raise DistillInputError naming ``kind``, ``beta`` or ``temperature`` when invalid."""
    if kind not in DIVERGENCES:
        raise DistillInputError(
            f"kind must be one of {sorted(DIVERGENCES)}, got {kind!r}; 'forward_kl' is "
            "KL(teacher || student), 'reverse_kl' KL(student || teacher), 'jsd' TRL's "
            "generalized JSD"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise DistillInputError(
            f"beta must be a number in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta!r}"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise DistillInputError(
            f"temperature must be a finite number > 0, got {temperature!r}; use 1.0 to compare "
            "the models' own distributions"
        )


def check_floating(name: str, tensor, min_ndim: int, max_ndim: int | None = None) -> None:
    """Raise DistillInputError unless ``tensor`` is a floating tensor of the allowed rank."""
    if not isinstance(tensor, torch.Tensor):
        raise DistillInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    too_many = max_ndim is not None and tensor.ndim > max_ndim
    if tensor.ndim < min_ndim or too_many or not tensor.is_floating_point():
        wanted = "(rows, width)" if max_ndim == 2 else "(*, V)"
        raise DistillInputError(
            f"{name} must be a floating tensor of shape {wanted}, got {tensor.dtype} of shape "
            f"{tuple(tensor.shape)}; convert with .float() or gather the rows first"
        )
