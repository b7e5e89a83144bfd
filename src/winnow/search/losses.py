"""Ranking losses over candidate lists, per list; reduction is the caller's explicit step.

Every loss takes ``(scores, targets, mask, temperature)``:

Shape:
    scores: ``[B, k]`` float logits, one row per query. targets: ``[B, k]`` float labels
    (normalised to ``[0, 1]`` by the caller; any finite value where ``mask`` is false).
    mask: ``[B, k]`` bool, true for labelled candidates. Returns ``[B]`` float.

Masked-out entries change neither the value nor any gradient, so a teacher without a label for
a candidate (``NaN``) simply drops out of the loss.
"""

from __future__ import annotations

from collections.abc import Callable

from winnow.common.extras import require

__all__ = ["LOSSES", "listwise_softmax_loss", "pointwise_mse_loss"]


def listwise_softmax_loss(scores, targets, mask, temperature: float = 1.0):
    """ListNet cross-entropy per list: ``-sum_i p_i log softmax(s)_i`` over masked-in entries.

    Shape:
        scores: ``[B, k]`` float logits. targets: ``[B, k]`` float labels (any finite value
        where ``mask`` is false). mask: ``[B, k]`` bool, true for labelled candidates.
        Returns ``[B]`` float; ``p = softmax(targets / temperature)`` over the masked-in entries.

    Masked-out entries affect neither softmax and receive zero gradient.
    """
    torch = require("torch", "search")
    neg_inf = torch.finfo(scores.dtype).min
    target_logits = (targets / temperature).masked_fill(~mask, neg_inf)
    probabilities = torch.softmax(target_logits, dim=-1).masked_fill(~mask, 0.0)
    log_probs = torch.log_softmax(scores.masked_fill(~mask, neg_inf), dim=-1)
    return -(probabilities * log_probs.masked_fill(~mask, 0.0)).sum(dim=-1)


def pointwise_mse_loss(scores, targets, mask, temperature: float = 1.0):
    """Squared error per list: mean over masked-in entries of ``(s - y)^2``; ``[B]`` float.

    Same shapes as :func:`listwise_softmax_loss`; ``temperature`` is unused (one signature).
    """
    torch = require("torch", "search")
    error = torch.where(mask, scores - targets, torch.zeros_like(scores)) ** 2
    return error.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1)


LOSSES: dict[str, Callable] = {"listwise": listwise_softmax_loss, "mse": pointwise_mse_loss}
