"""Which response tokens carry the distillation signal: per-token entropy and divergence, the
quadrant taxonomy, and the selectors that keep a subset of positions for the loss.

TIP (arXiv 2604.14084) sorts each response position by the student's entropy H and the
teacher-student divergence D into four quadrants and trains on a chosen subset. Where the student
is confident but wrong (quadrant 3: low H, high D) the entropy alone hides the signal; where it is
unsure (high H), the position is informative whatever the teacher says. Keeping fewer rows saves
the loss's logits memory when the output head runs at kept rows only.

Conventions
-----------
- One row per response position of a rollout batch, flattened: row k is the hidden state whose
  next token is a response token (see ``RolloutBatch.loss_rows``). ``sequence[k]`` names its
  rollout, ``offset[k]`` its index in the response (0 = the first response token).
- "High" means ``>=`` the per-batch quantile, so ties at the threshold count as high.
- Selectors return sorted, unique row indices. Those driven by a fraction ``p`` keep exactly
  :func:`kept_count` rows; ties in a ranking go to the lower row index.
- Quadrants: 1 = high H / high D, 2 = high H / low D, 3 = low H / high D (overconfident),
  4 = low H / low D.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from winnow.common.config import Config
from winnow.distill.divergence import DIVERGENCES, head_log_probs, validate_token_inputs
from winnow.distill.exceptions import DistillInputError

__all__ = [
    "SELECTORS",
    "SelectorConfig",
    "TokenStats",
    "kept_count",
    "quadrants",
    "response_lengths",
    "select_tokens",
    "token_statistics",
    "token_weights",
]

QUADRANTS = (1, 2, 3, 4)


@dataclass(frozen=True)
class TokenStats:
    """Per-position statistics of a rollout batch; all fields are ``(K)`` and carry no grad.

    Attributes:
        entropy: student entropy in nats, float.
        divergence: teacher-student divergence in nats (kind chosen by the caller), float.
        sequence: long, which rollout each position belongs to.
        offset: long, the position's index within its response (0 = first response token).
        log_ratio: ``log p_teacher(y) - log p_student(y)`` at the sampled token ``y``, float;
            None unless :func:`token_statistics` was given the targets (IW-OPD weights read it).
    """

    entropy: torch.Tensor
    divergence: torch.Tensor
    sequence: torch.Tensor
    offset: torch.Tensor
    log_ratio: torch.Tensor | None = None

    def __post_init__(self) -> None:
        fields = {name: value for name, value in vars(self).items() if value is not None}
        got = {name: _describe(value) for name, value in fields.items()}
        rows = {getattr(value, "shape", None) for value in fields.values()}
        if len(rows) != 1 or not isinstance(self.entropy, torch.Tensor) or self.entropy.ndim != 1:
            raise DistillInputError(
                f"TokenStats fields must be 1-D tensors with one value per row, got {got}"
            )


def token_statistics(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    sequence: torch.Tensor,
    offset: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    targets: torch.Tensor | None = None,
) -> TokenStats:
    """Student entropy and teacher-student divergence at K rows, with one student and one teacher
    logits pass per chunk of ``chunk_size`` rows, under ``torch.no_grad``; with ``targets (K)``
    (each row's sampled next token) also their log-ratio at that token.

    Both use the temperature-scaled distributions, so the entropy describes the distribution the
    divergence compares (the model's own at ``temperature = 1``). Values are clamped at 0 against
    rounding. Arguments are those of :func:`winnow.distill.divergence.token_divergence`.

    Shape:
        - student_hidden: ``(K, d_s)``; student_weight: ``(V, d_s)``.
        - teacher_hidden: ``(K, d_t)``; teacher_weight: ``(V, d_t)``.
        - sequence, offset: ``(K)`` integer.
        - Output: :class:`TokenStats` of ``(K)`` tensors, float32 (float64 for float64 inputs).
    """
    heads = (student_hidden, student_weight, teacher_hidden, teacher_weight)
    validate_token_inputs(*heads, kind, beta, temperature, chunk_size)
    rows = student_hidden.shape[0]
    for name, index in (("sequence", sequence), ("offset", offset)):
        shaped = isinstance(index, torch.Tensor) and index.shape == (rows,)
        if not shaped or index.is_floating_point():
            raise DistillInputError(
                f"{name} must be an integer tensor of shape ({rows},), one per hidden row, got "
                f"{_describe(index)}; take it from RolloutBatch.sequence_and_offset()"
            )
    entropy, divergence, log_ratio = [], [], []
    with torch.no_grad():
        # One empty chunk when K = 0, so the empty outputs still get the compute dtype.
        for start in range(0, rows, chunk_size) or [0]:
            chunk = slice(start, start + chunk_size)
            student_logp = head_log_probs(student_hidden[chunk], student_weight, temperature)
            teacher_logp = head_log_probs(teacher_hidden[chunk], teacher_weight, temperature)
            entropy.append(-(student_logp.exp() * student_logp).sum(-1))
            divergence.append(DIVERGENCES[kind](student_logp, teacher_logp, beta))
            if targets is not None:
                picked = targets[chunk].to(student_logp.device).unsqueeze(-1)
                log_ratio.append(
                    (teacher_logp.gather(-1, picked) - student_logp.gather(-1, picked)).squeeze(-1)
                )
    return TokenStats(
        entropy=torch.cat(entropy).clamp_min(0),
        divergence=torch.cat(divergence).clamp_min(0),
        sequence=sequence.detach().long(),
        offset=offset.detach().long(),
        log_ratio=None if targets is None else torch.cat(log_ratio),
    )


def quadrants(
    entropy: torch.Tensor,
    divergence: torch.Tensor,
    entropy_quantile: float = 0.5,
    divergence_quantile: float = 0.5,
) -> torch.Tensor:
    """Quadrant 1-4 of each row; "high" means ``>=`` the per-batch quantile of that statistic.

    1 = high H / high D, 2 = high H / low D, 3 = low H / high D (overconfident), 4 = low H / low D.
    Quantiles interpolate linearly (``torch.quantile``); when every value is equal, all are high.

    Shape:
        - entropy, divergence: ``(K)``.
        - Output: ``(K)`` long, values in ``{1, 2, 3, 4}``.
    """
    for name, value in (
        ("entropy_quantile", entropy_quantile),
        ("divergence_quantile", divergence_quantile),
    ):
        if not 0 <= value <= 1:
            raise DistillInputError(f"{name} must lie in [0, 1], got {value!r}")
    if entropy.shape != divergence.shape or entropy.ndim != 1:
        raise DistillInputError(
            f"entropy and divergence must be 1-D with one value per row, got shapes "
            f"{tuple(entropy.shape)} and {tuple(divergence.shape)}"
        )
    if entropy.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=entropy.device)
    low_entropy = entropy < _quantile(entropy, entropy_quantile)
    low_divergence = divergence < _quantile(divergence, divergence_quantile)
    return 1 + 2 * low_entropy.long() + low_divergence.long()


def kept_count(p: float, rows: int) -> int:
    """Rows a fraction ``p`` of ``rows`` keeps: ``min(rows, max(1, round(p * rows)))``.

    At least one row whenever there is one and ``p > 0``; ``p = 0`` keeps none. ``round`` is
    Python's (halves go to even), so ``kept_count(0.5, 5) == 2``.
    """
    if p == 0 or rows == 0:
        return 0
    return min(rows, max(1, round(p * rows)))


class SelectorConfig(Config):
    """Which response positions enter the loss, and the knobs of each selector.

    Selectors and the fields they read: ``all`` (none); ``random``, ``entropy_topk``,
    ``divergence_topk``, ``soft_or``, ``first_fraction`` (``p``); ``entropy_sample`` (``p``,
    ``alpha``); ``quadrants`` (``keep_quadrants`` and the two quantiles); ``type_aware``
    (``p_entropy``, ``p_overconfident`` and the two quantiles). ``before_first_error`` and
    ``error_quantile`` apply to every selector; ``weighting`` scales the kept rows' losses
    (:func:`token_weights`).
    """

    name: Literal[
        "all",
        "random",
        "entropy_topk",
        "entropy_sample",
        "divergence_topk",
        "quadrants",
        "soft_or",
        "type_aware",
        "first_fraction",
    ] = Field("all", description="the selector, a key of SELECTORS")
    p: float = Field(
        0.5, gt=0, le=1, description="fraction of eligible rows kept, in (0, 1]; see kept_count"
    )
    alpha: float = Field(
        1.0, ge=0, description="entropy_sample draws rows with weight entropy**alpha; 0 = uniform"
    )
    keep_quadrants: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        description="quadrants the 'quadrants' selector keeps; default drops low H / low D",
    )
    p_entropy: float = Field(
        0.5, ge=0, le=1, description="type_aware: fraction of rows kept by highest entropy"
    )
    p_overconfident: float = Field(
        0.1,
        ge=0,
        le=1,
        description="type_aware: at most this fraction of rows added from quadrant 3 by divergence",
    )
    entropy_quantile: float = Field(
        0.5, ge=0, le=1, description="entropy at or above this per-batch quantile is high"
    )
    divergence_quantile: float = Field(
        0.5, ge=0, le=1, description="divergence at or above this per-batch quantile is high"
    )
    before_first_error: bool = Field(
        False,
        description="keep only rows at or before each sequence's first error; later rows are "
        "scored on a prefix the teacher would not have produced",
    )
    error_quantile: float = Field(
        0.9, ge=0, le=1, description="an error is a row whose divergence is >= this quantile"
    )
    weighting: Literal["none", "iw_opd"] = Field(
        "none",
        description="per-row loss weights of the kept rows: none, or IW-OPD's (token_weights)",
    )
    iw_opd_gamma: float = Field(
        0.5, ge=0, description="iw_opd: weight amplification, w in [1, 1 + gamma] (TRL's default)"
    )

    @field_validator("keep_quadrants")
    @classmethod
    def _known_quadrants(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must name at least one quadrant; use name='all' to keep every row")
        unknown = sorted(set(value) - set(QUADRANTS))
        if unknown:
            raise ValueError(
                f"unknown quadrant(s) {unknown}: use 1 (high H, high D), 2 (high H, low D), "
                "3 (low H, high D) or 4 (low H, low D)"
            )
        return sorted(set(value))

    @model_validator(mode="after")
    def _type_aware_keeps_something(self) -> SelectorConfig:
        if self.name == "type_aware" and self.p_entropy == 0 and self.p_overconfident == 0:
            raise ValueError(
                "type_aware keeps nothing with p_entropy=0 and p_overconfident=0; set either > 0"
            )
        return self


Selector = Callable[[TokenStats, SelectorConfig, torch.Generator], torch.Tensor]


def _keep_all(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    return torch.arange(_rows(stats), device=stats.entropy.device)


def _keep_random(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    rows = _rows(stats)
    order = torch.randperm(rows, generator=generator, device=generator.device)
    return order[: kept_count(config.p, rows)].to(stats.entropy.device)


def _keep_entropy_topk(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    return _top(stats.entropy, kept_count(config.p, _rows(stats)))


def _keep_divergence_topk(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    return _top(stats.divergence, kept_count(config.p, _rows(stats)))


def _keep_entropy_sample(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    """Without replacement, proportional to ``entropy**alpha``, as Gumbel-top-k in log space.

    Ranking ``alpha * log H + Gumbel noise`` draws the same distribution as successive
    ``torch.multinomial`` draws, without overflowing ``H**alpha`` at large alpha or failing when
    fewer rows have positive weight than are kept. Rows with zero weight (``H = 0``, ``alpha > 0``)
    come last, in uniformly random order; ``alpha = 0`` is uniform over all rows (``0**0 = 1``).
    """
    entropy = stats.entropy.detach().double().cpu().clamp_min(0)
    uniform = torch.rand(
        entropy.shape, generator=generator, device=generator.device, dtype=torch.float64
    ).cpu()
    gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))
    log_weight = torch.xlogy(torch.tensor(config.alpha, dtype=torch.float64), entropy)
    weighted = log_weight > -math.inf
    key = torch.where(weighted, log_weight + gumbel, gumbel)
    order = torch.sort(key, descending=True, stable=True)[1]
    order = order[torch.sort(weighted[order].long(), descending=True, stable=True)[1]]
    return order[: kept_count(config.p, _rows(stats))].to(stats.entropy.device)


def _keep_quadrants(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    quadrant = quadrants(
        stats.entropy, stats.divergence, config.entropy_quantile, config.divergence_quantile
    )
    keep = torch.tensor(config.keep_quadrants, device=quadrant.device)
    return torch.nonzero(torch.isin(quadrant, keep)).flatten()


def _keep_soft_or(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    """Top rows by ``1 - (1 - H') (1 - D')``, with H' and D' min-max normalised per batch.

    A constant statistic normalises to 0, so the other one decides.
    """
    score = 1 - (1 - _min_max(stats.entropy)) * (1 - _min_max(stats.divergence))
    return _top(score, kept_count(config.p, _rows(stats)))


def _keep_type_aware(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    """Union of the ``kept_count(p_entropy, K)`` highest-entropy rows and the quadrant-3 rows
    with the highest divergence, at most ``kept_count(p_overconfident, K)`` of them.

    The entropy part keeps the rows where the student is unsure; the quadrant-3 part adds the
    confident-but-wrong rows that entropy alone would drop.
    """
    rows = _rows(stats)
    by_entropy = _top(stats.entropy, kept_count(config.p_entropy, rows))
    quadrant = quadrants(
        stats.entropy, stats.divergence, config.entropy_quantile, config.divergence_quantile
    )
    overconfident = torch.nonzero(quadrant == 3).flatten()
    ranked = overconfident[_top(stats.divergence[overconfident], overconfident.numel())]
    return torch.unique(torch.cat([by_entropy, ranked[: kept_count(config.p_overconfident, rows)]]))


def _keep_first_fraction(stats: TokenStats, config: SelectorConfig, generator: torch.Generator):
    """The first ``kept_count(p, L)`` positions of each response of ``L`` positions (IW-OPD's
    finding: the first 30% of a response teaches about as much as all of it)."""
    length = response_lengths(stats)
    limit = torch.tensor(
        [kept_count(config.p, int(n)) for n in length.tolist()], device=stats.offset.device
    )
    return torch.nonzero(stats.offset < limit).flatten()


SELECTORS: dict[str, Selector] = {
    "all": _keep_all,
    "random": _keep_random,
    "entropy_topk": _keep_entropy_topk,
    "entropy_sample": _keep_entropy_sample,
    "divergence_topk": _keep_divergence_topk,
    "quadrants": _keep_quadrants,
    "soft_or": _keep_soft_or,
    "type_aware": _keep_type_aware,
    "first_fraction": _keep_first_fraction,
}
"""Selector name -> ``fn(stats, config, generator) -> (k) long`` unique row indices, any order."""


def select_tokens(
    stats: TokenStats, config: SelectorConfig, generator: torch.Generator
) -> torch.Tensor:
    """Rows of ``stats`` that enter the loss, by the selector ``config.name``.

    With ``config.before_first_error``, rows after each sequence's first error (divergence ``>=``
    the per-batch ``error_quantile``, by ``offset``) are dropped first; the selector then sees
    only the eligible rows, so fractions and quantiles are of those rows. Randomness comes only
    from ``generator``.

    Shape:
        - Output: ``(k)`` long, sorted and unique indices into the rows of ``stats``.
    """
    if not isinstance(generator, torch.Generator):
        raise DistillInputError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; pass "
            "torch.Generator().manual_seed(seed) so selections are reproducible"
        )
    eligible = torch.arange(_rows(stats), device=stats.entropy.device)
    if config.before_first_error:
        eligible = torch.nonzero(_before_first_error(stats, config.error_quantile)).flatten()
    local = SELECTORS[config.name](_take(stats, eligible), config, generator)
    return torch.sort(eligible[local]).values


def token_weights(stats: TokenStats, kept: torch.Tensor, config: SelectorConfig) -> torch.Tensor:
    """``(k)`` loss weights of the kept rows (all ones for ``weighting="none"``).

    ``"iw_opd"`` (arXiv 2606.22600, as TRL's ``IWOPDTrainer`` computes it): with the sampled
    token's log-ratio ``a_t = log p_teacher(y_t) - log p_student(y_t)`` at each position ``t`` of
    a response, ``w_t = 1 + gamma (1 - sum_{s<t} |a_s| / max(sum_s |a_s|, 1e-8))``: a position
    weighs less the more discrepancy its prefix has already accumulated (its supervision has
    drifted out of distribution), between ``1 + gamma`` at the start and 1. Sums run over every
    position of the response, kept or not. Needs ``stats.log_ratio``.
    """
    rows = kept.numel()
    if config.weighting == "none" or rows == 0:
        return torch.ones(rows, dtype=torch.float64, device=kept.device)
    if stats.log_ratio is None:
        raise DistillInputError(
            "IW-OPD weights need each row's sampled-token log-ratio; pass targets to "
            "token_statistics (opd_loss does)"
        )
    size = stats.log_ratio.abs().double()
    prefix, total = torch.empty_like(size), torch.empty_like(size)
    for response in torch.unique(stats.sequence):
        rows_of = torch.nonzero(stats.sequence == response).flatten()
        rows_of = rows_of[torch.argsort(stats.offset[rows_of])]
        running = size[rows_of].cumsum(0)
        prefix[rows_of] = running - size[rows_of]
        total[rows_of] = running[-1].clamp_min(1e-8)
    weight = 1 + config.iw_opd_gamma * (1 - prefix / total)
    return weight[kept]


def _before_first_error(stats: TokenStats, error_quantile: float) -> torch.Tensor:
    """``(K)`` bool: the row's offset is at or before its sequence's first error."""
    if _rows(stats) == 0:
        return torch.zeros(0, dtype=torch.bool, device=stats.entropy.device)
    error = stats.divergence >= _quantile(stats.divergence, error_quantile)
    sequence = _sequence_ids(stats)
    never = torch.iinfo(torch.long).max
    first = torch.full((int(sequence.max()) + 1,), never, device=sequence.device)
    first = first.scatter_reduce(
        0, sequence, torch.where(error, stats.offset, never), reduce="amin"
    )
    return stats.offset <= first[sequence]


def _sequence_ids(stats: TokenStats) -> torch.Tensor:
    """``(K)`` each row's response as 0..S-1 (``stats.sequence`` may skip ids)."""
    return torch.unique(stats.sequence, return_inverse=True)[1]


def response_lengths(stats: TokenStats) -> torch.Tensor:
    """``(K)`` the length in positions of each row's response (its largest offset + 1, so a
    response whose later positions were dropped counts only the positions given)."""
    sequence = _sequence_ids(stats)
    if sequence.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=stats.offset.device)
    longest = torch.zeros(int(sequence.max()) + 1, dtype=torch.long, device=sequence.device)
    longest = longest.scatter_reduce(0, sequence, stats.offset, reduce="amax")
    return (longest + 1)[sequence]


def _top(values: torch.Tensor, count: int) -> torch.Tensor:
    return torch.sort(values, descending=True, stable=True)[1][:count]


def _min_max(values: torch.Tensor) -> torch.Tensor:
    values = values.double()
    if values.numel() == 0:
        return values
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else torch.zeros_like(values)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(values.double(), q)


def _take(stats: TokenStats, rows: torch.Tensor) -> TokenStats:
    return TokenStats(
        stats.entropy[rows], stats.divergence[rows], stats.sequence[rows], stats.offset[rows]
    )


def _rows(stats: TokenStats) -> int:
    return stats.entropy.shape[0]


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__
