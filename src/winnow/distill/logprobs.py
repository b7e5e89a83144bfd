"""Log-probabilities of chosen tokens at K rows, chunked so no ``[K x V]`` tensor is kept.

Policy-gradient objectives (GRPO, DAPO, ACE) need one number per sampled token: the log-probability
the policy gives to the token it sampled. :func:`token_log_probs` computes it from final hidden
states and the output weight the way :func:`~winnow.distill.divergence.token_divergence` computes
divergences: a chunk of rows at a time in the forward pass, saving only the inputs, and again in
the backward pass, where each chunk is differentiated with autograd and dropped.

Conventions
-----------
- Values are natural-log probabilities, ``<= 0``, one per row.
- ``temperature`` divides the logits before the log-softmax, as at sampling time.
- The log-softmax runs in float32, or in float64 when an input is float64 (the rule of
  :func:`~winnow.distill.divergence.head_log_probs`); gradients have their inputs' dtypes.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from winnow.distill.divergence import (
    check_floating,
    check_settings,
    compute_dtype,
    head_log_probs,
    recompute_input_grads,
    row_chunks,
)
from winnow.distill.exceptions import DistillInputError

__all__ = ["token_log_probs"]


def token_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T / temperature)[k, targets[k]]`` for each of K rows,
    computed ``chunk_size`` rows at a time: peak extra memory is ``O(chunk_size * V)`` in the
    forward and the backward.

    Under next-token alignment ``hidden[k]`` is the hidden state at position ``t`` and
    ``targets[k]`` the token at ``t + 1`` (see :meth:`RolloutBatch.loss_rows`). Gradients reach
    ``hidden`` and ``weight`` when they require them (also a weight tied to the input embedding).
    Not twice differentiable.

    Args:
        hidden: final hidden states (after the last norm) at the K rows.
        weight: the output weight, ``model.get_output_embeddings().weight``.
        targets: the token whose log-probability is wanted at each row, in ``[0, V)``.
        temperature: divides the logits, ``> 0``.
        chunk_size: rows per logits chunk, ``>= 1``.

    Shape:
        - hidden: ``(K, d)``; weight: ``(V, d)``; targets: ``(K)`` long.
        - Output: ``(K)``, float32 (float64 when an input is float64).

    Example::

        batch_idx, pos_idx = batch.loss_rows()
        targets = batch.input_ids[batch_idx, pos_idx + 1]
        logp = token_log_probs(hidden[batch_idx, pos_idx], lm_head.weight, targets)
    """
    _validate(hidden, weight, targets, temperature, chunk_size)
    return _ChunkedTokenLogProbs.apply(hidden, weight, targets, float(temperature), int(chunk_size))


def _picked(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    log_probs = head_log_probs(hidden, weight, temperature)
    return log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)


class _ChunkedTokenLogProbs(torch.autograd.Function):
    """Forward: values chunk by chunk, saving only the inputs. Backward: recompute and
    differentiate one chunk at a time, accumulating the weight gradient in the compute dtype."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_size: int):
        ctx.save_for_backward(hidden, weight, targets)
        ctx.settings = (temperature, chunk_size)
        ctx.mark_non_differentiable(targets)
        dtype = compute_dtype(hidden, weight)
        weight = weight.to(dtype)
        values = hidden.new_empty(hidden.shape[0], dtype=dtype)
        for rows in row_chunks(hidden.shape[0], chunk_size):
            values[rows] = _picked(hidden[rows], weight, targets[rows], temperature)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values):
        hidden, weight, targets = ctx.saved_tensors
        temperature, chunk_size = ctx.settings

        def values_of(rows: slice, chunk: torch.Tensor, work_weight: torch.Tensor):
            return _picked(chunk, work_weight, targets[rows], temperature)

        grads = recompute_input_grads(
            hidden, weight, grad_values, ctx.needs_input_grad[:2], compute_dtype(hidden, weight),
            chunk_size, values_of,
        )  # fmt: skip
        return (*grads, None, None, None)


def _validate(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> None:
    # Only the temperature is in question here; kind and beta are fixed valid values.
    check_settings("forward_kl", 0.0, temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DistillInputError(
            f"chunk_size must be an int >= 1, got {chunk_size!r}; 1024 rows suits most vocabularies"
        )
    check_floating("hidden", hidden, min_ndim=2, max_ndim=2)
    check_floating("weight", weight, min_ndim=2, max_ndim=2)
    if hidden.shape[1] != weight.shape[1]:
        raise DistillInputError(
            f"hidden has width {hidden.shape[1]} but weight is {tuple(weight.shape)}; pass the "
            "final hidden states (after the last norm) and the same model's output weight (V, d)"
        )
    rows = hidden.shape[0]
    if (
        not isinstance(targets, torch.Tensor)
        or targets.shape != (rows,)
        or targets.dtype != torch.long
    ):
        got = (
            f"{targets.dtype} of shape {tuple(targets.shape)}"
            if isinstance(targets, torch.Tensor)
            else type(targets).__name__
        )
        raise DistillInputError(
            f"targets must be a long tensor of shape ({rows},), one token per hidden row, got "
            f"{got}; pass input_ids[batch_idx, pos_idx + 1] at the rows of loss_rows()"
        )
    if rows and not 0 <= int(targets.min()) <= int(targets.max()) < weight.shape[0]:
        raise DistillInputError(
            f"targets must be token ids in [0, {weight.shape[0]}) (the rows of weight), got "
            f"values in [{int(targets.min())}, {int(targets.max())}]; slice weight to the "
            "tokenizer's vocabulary only after checking every sampled id is inside it"
        )
