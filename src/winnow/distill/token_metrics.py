"""Plain-float metrics of one token selection, as every step logs them: how many rows were
kept, from which quadrants, and where the loss came from (by quadrant and by position)."""

from __future__ import annotations

import torch

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tokens import (
    QUADRANTS,
    SelectorConfig,
    TokenStats,
    quadrants,
    response_lengths,
)

__all__ = ["selection_summary"]


def selection_summary(
    stats: TokenStats,
    kept: torch.Tensor,
    per_token_loss: torch.Tensor | None = None,
    config: SelectorConfig | None = None,
) -> dict[str, float]:
    """Plain-float metrics of one selection, ready for ``metrics.json``.

    Keys: ``kept_fraction`` (kept rows / all rows); ``quadrant_fraction_q1..q4`` (share of all
    rows in each quadrant); ``kept_quadrant_fraction_q1..q4`` (share of the kept rows in each
    quadrant); ``mean_entropy_kept``, ``mean_divergence_kept``; and, when ``per_token_loss`` is
    given, ``loss_mass_q1..q4`` (share of the summed loss coming from kept rows in each quadrant).
    Quadrants use ``config``'s quantiles (defaults when None). Empty denominators give 0.0.

    Shape:
        - kept: ``(k)`` long row indices, as :func:`select_tokens` returns.
        - per_token_loss: ``(k)``, aligned with ``kept``.
    """
    config = config or SelectorConfig()
    rows = stats.entropy.shape[0]
    in_range = kept.numel() == 0 or (kept.min() >= 0 and kept.max() < rows)
    if kept.ndim != 1 or kept.is_floating_point() or not in_range:
        raise DistillInputError(
            f"kept must be 1-D integer row indices in [0, {rows}), got {kept.dtype} of shape "
            f"{tuple(kept.shape)}; pass what select_tokens returned for these stats"
        )
    if per_token_loss is not None and per_token_loss.shape != kept.shape:
        raise DistillInputError(
            f"per_token_loss must have one value per kept row {tuple(kept.shape)}, got "
            f"{tuple(per_token_loss.shape)}"
        )
    quadrant = quadrants(
        stats.entropy, stats.divergence, config.entropy_quantile, config.divergence_quantile
    )
    shares = {
        "quadrant_fraction": _shares(quadrant),
        "kept_quadrant_fraction": _shares(quadrant[kept]),
    }
    deciles = []
    if per_token_loss is not None:
        loss = per_token_loss.detach().double()
        shares["loss_mass"] = _shares(quadrant[kept], loss)
        position = stats.offset[kept].double() / response_lengths(stats)[kept].double()
        decile = (position * 10).floor().long().clamp(0, 9)
        deciles = [_ratio(loss[decile == d].sum().item(), loss.sum().item()) for d in range(10)]
    summary = {
        "kept_fraction": _ratio(kept.numel(), rows),
        "mean_entropy_kept": _ratio(stats.entropy[kept].sum().item(), kept.numel()),
        "mean_divergence_kept": _ratio(stats.divergence[kept].sum().item(), kept.numel()),
    }
    for prefix, values in shares.items():
        summary.update(
            {f"{prefix}_q{q}": value for q, value in zip(QUADRANTS, values, strict=True)}
        )
    summary.update({f"loss_mass_decile_{d}": share for d, share in enumerate(deciles)})
    return summary


def _shares(quadrant: torch.Tensor, weight: torch.Tensor | None = None) -> list[float]:
    """Share of the total weight (default: of the rows) in each quadrant."""
    weight = torch.ones(quadrant.shape, dtype=torch.float64) if weight is None else weight
    weight = weight.to(quadrant.device)
    return [_ratio(weight[quadrant == q].sum().item(), weight.sum().item()) for q in QUADRANTS]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0
