"""The serving stack around a cross-encoder: what makes one request of ``k`` candidates cheap.

A reranking request is one query and ``k`` candidate items; it is served prefill-only: the
``k`` ``(query, item)`` pairs are tokenised and run through the network in one forward pass
(:func:`score_pairs`), with no decoding. What it costs is set by a few choices, each described
by a :class:`ServingStack` and each cheaper than the one before:

- **layers** kept of the cross-encoder (:class:`~winnow.search.ranker.StudentRanker`);
- **max_length**: word pieces per pair, truncated longest-first;
- **compressed item text**: a query-independent extractive summary of each item, made offline
  once per corpus (:func:`~winnow.search.summaries.summarize`), served instead of the item;
- **dynamic int8**: the encoder's ``Linear`` layers hold int8 weights and quantise their
  activations per batch on the fly (:func:`quantize_int8`); CPU only.

Throughput is judged at a latency budget, as a service sees it: :func:`measure_latencies` times
requests of each batch size, :func:`throughput_at_budget` picks the largest batch size whose
p99 latency fits the budget and reports the items per second it sustains.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = [
    "ServingStack",
    "cross_encoder_of",
    "measure_latencies",
    "quantize_int8",
    "score_pairs",
    "throughput_at_budget",
    "tokenize_pairs",
    "word_piece_counter",
]


@dataclass(frozen=True)
class ServingStack:
    """One serving configuration of a cross-encoder.

    Args:
        name: a label for results (``"teacher"``, ``"student"``, ...).
        num_layers: transformer layers kept, >= 1.
        max_length: word pieces per ``(query, item)`` pair, >= 8.
        summary_tokens: serve each item's extractive summary of at most this many word pieces
            instead of its full text; ``None`` serves the full text.
        int8: dynamic int8 quantisation of the encoder's ``Linear`` layers.
    """

    name: str
    num_layers: int
    max_length: int
    summary_tokens: int | None = None
    int8: bool = False

    def __post_init__(self):
        _check_int("num_layers", self.num_layers, 1)
        _check_int("max_length", self.max_length, 8)
        if self.summary_tokens is not None:
            _check_int("summary_tokens", self.summary_tokens, 1, "or None for the full text")
        if not isinstance(self.int8, bool):
            raise SearchInputError(f"int8 must be True or False; got {self.int8!r}")


def cross_encoder_of(ranker):
    """The sentence-transformers ``CrossEncoder`` inside a fitted teacher or student ranker."""
    network = getattr(ranker, "network_", ranker)
    if not hasattr(network, "model_"):
        raise SearchInputError(
            f"ranker must be a fitted CrossEncoderTeacher or StudentRanker (int8 and summaries "
            f"apply to cross-encoders); got {type(ranker).__name__} without a cross-encoder; "
            "fit or load one first (.fit(...) or .load(path))"
        )
    return network.model_


def quantize_int8(ranker):
    """A copy of ``ranker`` whose encoder ``Linear`` layers are dynamic int8; ``ranker`` is kept.

    ``ranker`` is a fitted :class:`~winnow.search.cross_encoder.CrossEncoderTeacher` or
    :class:`~winnow.search.ranker.StudentRanker`; the result is the same kind and its
    ``score(query, docs)`` works as before. Only the encoder is quantised: the pooler and the
    one-output head run once per pair, not per token, and stay float32. The result is for
    serving on CPU; it cannot be trained further or saved with ``save``.
    """
    torch = require("torch", "search")
    cross_encoder_of(ranker)
    quantized = copy.deepcopy(ranker)
    network = cross_encoder_of(quantized).model
    base = getattr(network, network.base_model_prefix, network)
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency;
        # the eager dynamic path still works and is what CPU serving needs here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        base.encoder = torch.ao.quantization.quantize_dynamic(
            base.encoder,
            {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            inplace=True,
        )
    return quantized


def word_piece_counter(ranker) -> Callable[[str], int]:
    """``text -> word pieces`` of the ranker's tokenizer without special tokens, for budgets
    such as :func:`~winnow.search.summaries.summarize`'s ``count_tokens``."""
    tokenizer = cross_encoder_of(ranker).tokenizer

    def count(text: str) -> int:
        # verbose=False: texts longer than the model's max_length are counted, not warned about
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return count


def tokenize_pairs(ranker, pairs: Sequence[tuple[str, str]]) -> dict:
    """Model inputs of ``n`` ``(query, item)`` pairs, padded to the longest, cut at max_length."""
    return cross_encoder_of(ranker).preprocess(list(pairs))


def score_pairs(ranker, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """``[n]`` float64 logits of ``(query, item)`` pairs: tokenise, one forward pass, no decoding.

    The whole batch runs at once (the serving path a latency budget is measured on); use
    ``ranker.score`` to score a long list in chunks.
    """
    torch = require("torch", "search")
    model = cross_encoder_of(ranker)
    with torch.inference_mode():
        scores = model(tokenize_pairs(ranker, pairs))["scores"]
    return scores.reshape(-1).double().numpy()


def measure_latencies(
    score_batch: Callable[[list], object],
    items: Sequence,
    batch_sizes: Iterable[int],
    repeats: int,
    warmup: int = 2,
) -> dict[int, np.ndarray]:
    """``{batch size: [repeats] float seconds}`` of ``score_batch(batch)`` per call.

    Batches are consecutive slices of ``items`` (wrapping around), the same ones for every
    caller given the same ``items``, so stacks timed on them see the same requests. Each size
    first runs ``warmup`` untimed calls.
    """
    items = list(items)
    if not items:
        raise SearchInputError("items is empty; pass the requests' items to time")
    _check_int("repeats", repeats, 1)
    _check_int("warmup", warmup, 0)
    sizes = list(batch_sizes)
    for size in sizes:
        _check_int("batch_sizes entries", size, 1)
    latencies = {}
    for size in sizes:
        seconds = np.empty(repeats)
        for call in range(-warmup, repeats):
            batch = _slice(items, max(call, 0) * size, size)
            start = time.perf_counter()
            score_batch(batch)
            if call >= 0:
                seconds[call] = time.perf_counter() - start
        latencies[size] = seconds
    return latencies


def throughput_at_budget(
    latencies: Mapping[int, np.ndarray], budget_s: float, quantile: float = 0.99
) -> dict:
    """Items per second at the largest batch size whose ``quantile`` latency fits the budget.

    Args:
        latencies: ``{batch size: [r] float seconds per call}``, ``r >= 1``.
        budget_s: the latency budget per request in seconds, > 0.
        quantile: the latency quantile that must fit, in ``(0, 1]``.

    Returns ``{"batch_size", "p99_s", "items_per_s", "fits"}``: the chosen batch size, its
    ``quantile`` latency (named ``p99_s`` whatever the quantile), ``batch size / mean latency``
    at that size, and True. When no size fits: ``None``, ``None``, ``0.0``, False.
    """
    if not isinstance(budget_s, Real) or not budget_s > 0:
        raise SearchInputError(f"budget_s must be seconds > 0; got {budget_s!r}")
    if not isinstance(quantile, Real) or not 0 < quantile <= 1:
        raise SearchInputError(f"quantile must be in (0, 1], e.g. 0.99; got {quantile!r}")
    if not latencies:
        raise SearchInputError("latencies is empty; time some batch sizes first")
    best = {"batch_size": None, "p99_s": None, "items_per_s": 0.0, "fits": False}
    for size in sorted(latencies):
        _check_int("latencies keys", size, 1)
        seconds = np.asarray(latencies[size], dtype=np.float64)
        if seconds.ndim != 1 or not len(seconds) or not np.isfinite(seconds).all():
            raise SearchInputError(
                f"latencies[{size}] must be a non-empty 1-d array of finite seconds"
            )
        tail = float(np.quantile(seconds, quantile))
        if tail <= budget_s:
            best = {
                "batch_size": int(size),
                "p99_s": tail,
                "items_per_s": float(size / seconds.mean()),
                "fits": True,
            }
    return best


def _slice(items: list, start: int, size: int) -> list:
    return [items[(start + offset) % len(items)] for offset in range(size)]


def _check_int(label: str, value, low: int, alternative: str = "") -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        fix = f" {alternative}" if alternative else ""
        raise SearchInputError(f"{label} must be an int >= {low}{fix}; got {value!r}")
