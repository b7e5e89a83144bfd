"""Ranking losses over candidate lists, per list; reduction is the caller's explicit step.

Every loss takes ``(scores, targets, mask, temperature)``:

Shape:
    scores: ``[B, k]`` float logits, one row per query. targets: ``[B, k]`` float labels
    (normalised to ``[0, 1]`` by the caller; any finite value where ``mask`` is false).
    mask: ``[B, k]`` bool, true for labelled candidates. Returns ``[B]`` float.

Masked-out entries change neither the value nor any gradient, so a teacher without a label for
a candidate (``NaN``) simply drops out of the loss.

Target normalisations (:data:`TARGET_NORMS`, ``(scores, mask) -> scores``) rescale a teacher's
scores per list before they become targets: :func:`standardize_scores` makes the soft targets
of a teacher whose logits spread little as peaked as those of one whose logits spread a lot.
"""

from __future__ import annotations

from collections.abc import Callable

from winnow.common.extras import require

__all__ = [
    "LOSSES",
    "TARGET_NORMS",
    "keep_scores",
    "listwise_softmax_loss",
    "pointwise_mse_loss",
    "standardize_scores",
]


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


def standardize_scores(scores, mask, eps: float = 1e-6):
    """Per-row z-scores over the masked-in entries: ``(s - mean) / (std + eps)``.

    Shape:
        scores: ``[B, k]`` float (any value, ``NaN`` included, where ``mask`` is false).
        mask: ``[B, k]`` bool. Returns ``[B, k]`` float: masked-in entries of each row with mean
        0 and population standard deviation ``std / (std + eps)`` (1 up to ``eps``); masked-out
        entries are returned unchanged.

    A row with one masked-in entry, or all equal, gives zeros (never ``NaN``). Invariant to
    ``a * s + b`` per row for ``a > 0`` (up to ``eps``), so the targets ignore a teacher's
    offset and scale.
    """
    torch = require("torch", "search")
    zeros = torch.zeros_like(scores)
    values = torch.where(mask, scores, zeros)
    count = mask.sum(dim=-1, keepdim=True).clamp_min(1)
    mean = values.sum(dim=-1, keepdim=True) / count
    centred = torch.where(mask, scores - mean, zeros)
    variance = (centred**2).sum(dim=-1, keepdim=True) / count
    spread = variance > 0  # sqrt's gradient at 0 is infinite: keep it out of backward
    std = torch.where(spread, torch.where(spread, variance, 1.0).sqrt(), 0.0)
    return torch.where(mask, centred / (std + eps), scores)


def keep_scores(scores, mask):
    """The scores as given (no normalisation); same signature as :func:`standardize_scores`."""
    return scores


TARGET_NORMS: dict[str, Callable] = {"standardize": standardize_scores, "none": keep_scores}
