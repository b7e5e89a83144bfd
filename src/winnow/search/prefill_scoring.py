"""Prefill-only relevance scoring with a decoder LM, reusing the query prefix across candidates.

A ranker prompt is ``prefix + candidate``: the prefix holds the instruction and the query, the
candidate the item text and the question (``"... Relevant?"``). The score is read from the
next-token logits after the candidate's last token, with no decoding, as the answer margin

    ``m = l_yes - l_no``, and ``P(yes) = exp(l_yes) / (exp(l_yes) + exp(l_no)) = sigmoid(m)``.

The margin is one dot product per candidate: ``l_yes - l_no = h . (W_yes - W_no) + (b_yes -
b_no)`` with the answer rows of the output matrix folded into one vector
(:func:`folded_answer_vector`), so the ``[n, V]`` vocabulary projection is never formed. A model
with ``final_logit_softcapping`` (``l = c * tanh(z / c)`` per logit, Gemma 2) cannot be folded:
there the two rows are applied and capped separately.

Every candidate of a request shares the prefix, so :func:`score_with_prefix_cache` runs the
prefix once, keeps its key/value cache, and runs only the candidate tokens for each batch: the
cache (``[1, heads, P, head_dim]`` per layer) is expanded over the batch, candidates are
right-padded with an attention mask over ``prefix + candidate`` and position ids ``P, P+1, ...``,
and each score is read at the candidate's last real token. :func:`score_full_sequences` is the
plain computation (prefix and candidate concatenated, one forward each) that it must equal.
Both batch candidates longest first (less padding) and return margins in the input order. Both
are differentiable under the caller's grad mode (a teacher trains through them); wrap inference
in ``torch.no_grad()``, as :class:`PrefixScorer` does.

Tokenisation: the prefix is tokenised with the tokenizer's special tokens, each candidate
without them, and the ids are concatenated, so both functions see the same tokens; end the
prefix at a natural token boundary (a newline) so that this matches tokenising the whole text.

:func:`plan_batches` splits candidates into batches whose padded token count fits a budget
derived from a latency target (:func:`token_budget`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = [
    "SCORERS",
    "PrefixScorer",
    "answer_token_ids",
    "folded_answer_vector",
    "plan_batches",
    "score_full_sequences",
    "score_with_prefix_cache",
    "token_budget",
    "yes_probability",
]


def yes_probability(yes_logits, no_logits):
    """``sigmoid(l_yes - l_no)``: P(yes) renormalised over the two answers. Shapes: ``[n]``."""
    return (yes_logits - no_logits).sigmoid()


def answer_token_ids(tokenizer, yes: str = " yes", no: str = " no") -> tuple[int, int]:
    """Ids of the ``yes`` and ``no`` answer strings, each required to be exactly one token."""
    ids = []
    for name, text in (("yes", yes), ("no", no)):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise SearchInputError(
                f"{name} answer {text!r} is {len(encoded)} tokens ({encoded}) for this tokenizer; "
                "pass a string that is one token (e.g. ' yes' for BPE models, 'y' for a "
                "character tokenizer)"
            )
        ids.append(encoded[0])
    if ids[0] == ids[1]:
        raise SearchInputError(f"yes and no answers map to the same token id {ids[0]}")
    return ids[0], ids[1]


def folded_answer_vector(model, yes_id: int, no_id: int):
    """``(w, b)`` with ``logit_yes - logit_no = hidden @ w + b`` for ``model``'s output layer.

    Shape:
        ``w``: ``[H]`` = ``W[yes_id] - W[no_id]`` of the output embedding ``W: [V, H]``;
        ``b``: ``[]`` = ``bias[yes_id] - bias[no_id]`` (0 without a bias). Both carry gradient
        when ``W`` does. ``hidden`` is the decoder's last (normed) hidden state, ``[n, H]``.

    Raises :class:`SearchInputError` for a model with ``final_logit_softcapping``: the cap is a
    tanh per logit, so the difference of capped logits is no linear function of ``hidden``.
    """
    if _softcap(model):
        raise SearchInputError(
            f"final_logit_softcapping={_softcap(model)} applies tanh to each logit, so the "
            "answer rows cannot be folded into one vector; score with the two logits instead"
        )
    head = model.get_output_embeddings()
    vector = head.weight[yes_id] - head.weight[no_id]
    bias = getattr(head, "bias", None)
    offset = vector.new_zeros(()) if bias is None else bias[yes_id] - bias[no_id]
    return vector, offset


def score_with_prefix_cache(
    model,
    prefix_ids: Sequence[int],
    candidate_ids: Sequence[Sequence[int]],
    yes_id: int,
    no_id: int,
    batch_size: int = 32,
):
    """Answer margin ``l_yes - l_no`` per candidate; the prefix runs once, its KV cache reused.

    Args:
        model: a transformers causal LM (``get_decoder()``, ``get_output_embeddings()``).
        prefix_ids: ``P >= 1`` token ids shared by all candidates.
        candidate_ids: ``n`` id lists, each non-empty, of any lengths.
        yes_id, no_id: answer token ids (:func:`answer_token_ids`).
        batch_size: candidates per forward pass (the last batch may be smaller).

    Returns ``[n]`` float32 margins in the order of ``candidate_ids``; ``sigmoid`` gives P(yes).
    Differentiable: gradients reach the prefix pass through the expanded cache.
    """
    torch = require("torch", "search")
    transformers = require("transformers", "search")
    _check_ids(prefix_ids, candidate_ids, batch_size)
    decoder, device = model.get_decoder(), model.device
    prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    cache_kwarg = _cache_argument(decoder)
    prefix_cache = getattr(decoder(input_ids=prefix, use_cache=True), cache_kwarg)
    layers = [(keys, values) for keys, values, *_ in prefix_cache]
    n_prefix = prefix.shape[1]

    def run(batch):
        ids, mask, lengths = _right_pad(torch, batch, device)
        size, width = ids.shape
        cache = transformers.DynamicCache(
            ddp_cache_data=[
                (k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in layers
            ],
            config=model.config,
        )
        full_mask = torch.cat([mask.new_ones(size, n_prefix), mask], dim=1)
        positions = (n_prefix + torch.arange(width, device=device)).expand(size, -1)
        hidden = decoder(
            input_ids=ids,
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=True,
            **{cache_kwarg: cache},
        ).last_hidden_state
        return _answer_margin(
            model, hidden[torch.arange(size, device=device), lengths - 1], yes_id, no_id
        )

    return _in_length_batches(torch, candidate_ids, batch_size, run)


def score_full_sequences(
    model,
    prefix_ids: Sequence[int],
    candidate_ids: Sequence[Sequence[int]],
    yes_id: int,
    no_id: int,
    batch_size: int = 32,
):
    """Answer margin per candidate from ``prefix + candidate`` run whole (no reuse); the
    reference. Same arguments and return as :func:`score_with_prefix_cache`."""
    torch = require("torch", "search")
    _check_ids(prefix_ids, candidate_ids, batch_size)
    decoder, device = model.get_decoder(), model.device
    sequences = [list(prefix_ids) + list(candidate) for candidate in candidate_ids]

    def run(batch):
        ids, mask, lengths = _right_pad(torch, batch, device)
        positions = torch.arange(ids.shape[1], device=device).expand(ids.shape[0], -1)
        hidden = decoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        last = hidden[torch.arange(ids.shape[0], device=device), lengths - 1]
        return _answer_margin(model, last, yes_id, no_id)

    return _in_length_batches(torch, sequences, batch_size, run)


SCORERS: dict[bool, Callable] = {True: score_with_prefix_cache, False: score_full_sequences}


class PrefixScorer:
    """Scores many candidate texts for one prefix text with a causal LM, prefill only.

    Args:
        model, tokenizer: a transformers causal LM and its tokenizer, e.g. from
            :func:`~winnow.common.causal_lm.load_causal_lm`.
        yes, no: answer strings, one token each (:func:`answer_token_ids`).
        batch_size: candidates per forward pass.
        reuse_prefix: run the prefix once and reuse its KV cache (:func:`score_with_prefix_cache`)
            or run every full sequence (:func:`score_full_sequences`); scores agree to float
            rounding.
    """

    def __init__(
        self,
        model,
        tokenizer,
        yes: str = " yes",
        no: str = " no",
        batch_size: int = 32,
        reuse_prefix: bool = True,
    ):
        if not isinstance(batch_size, Integral) or batch_size < 1:
            raise SearchInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.yes_id, self.no_id = answer_token_ids(tokenizer, yes, no)
        self.batch_size = batch_size
        self.reuse_prefix = bool(reuse_prefix)

    def margins(self, prefix: str, candidates: Sequence[str]) -> np.ndarray:
        """``[len(candidates)]`` float32 ``l_yes - l_no`` of each ``prefix + candidate``."""
        torch = require("torch", "search")
        if isinstance(candidates, str) or not candidates:
            raise SearchInputError("candidates must be a non-empty list of strings")
        prefix_ids = self.tokenizer(prefix, add_special_tokens=True)["input_ids"]
        candidate_ids = self.tokenizer(list(candidates), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            margins = SCORERS[self.reuse_prefix](
                self.model, prefix_ids, candidate_ids, self.yes_id, self.no_id, self.batch_size
            )
        return margins.float().cpu().numpy()

    def score(self, prefix: str, candidates: Sequence[str]) -> np.ndarray:
        """``[len(candidates)]`` float32 P(yes) in ``(0, 1)``: ``sigmoid`` of :meth:`margins`."""
        margins = self.margins(prefix, candidates).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-margins))).astype(np.float32)


def token_budget(latency_s: float, overhead_s: float, seconds_per_token: float) -> int:
    """Padded tokens one batch may hold so that ``overhead + tokens * per_token <= latency``.

    ``overhead_s`` and ``seconds_per_token`` come from timing a few batches on the serving
    hardware (a linear fit of batch time against padded tokens).
    """
    if seconds_per_token <= 0 or overhead_s < 0:
        raise SearchInputError(
            f"need seconds_per_token > 0 and overhead_s >= 0; got {seconds_per_token}, {overhead_s}"
        )
    tokens = int((latency_s - overhead_s) / seconds_per_token)
    if tokens < 1:
        raise SearchInputError(
            f"a latency of {latency_s}s leaves no room for a token after the {overhead_s}s "
            "overhead; raise the budget or lower the overhead"
        )
    return tokens


def plan_batches(
    lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None
) -> list[np.ndarray]:
    """Split candidates into batches of at most ``max_tokens`` padded tokens each.

    Candidates are sorted by length (longest first, ties by index) and packed greedily, so a
    batch's cost ``len(batch) * max(lengths in batch)`` stays within ``max_tokens``; a candidate
    longer than ``max_tokens`` goes alone. Returns index arrays covering every candidate once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 1).any():
        raise SearchInputError("lengths must be a 1-d sequence of positive token counts")
    if not isinstance(max_tokens, Integral) or max_tokens < 1:
        raise SearchInputError(f"max_tokens must be an int >= 1; got {max_tokens!r}")
    cap = max_batch_size or len(lengths)
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    batches, current = [], []
    for index in order:
        width = max([lengths[index]] + [lengths[i] for i in current])
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= cap):
            batches.append(np.asarray(current))
            current = []
        current.append(index)
    if current:
        batches.append(np.asarray(current))
    return batches


def _cache_argument(decoder) -> str:
    # transformers 5.24 renamed the KV-cache argument and output field to ``cache``; earlier
    # versions (the distill extra allows >= 4.46) call it ``past_key_values``.
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _softcap(model) -> float | None:
    return getattr(model.config, "final_logit_softcapping", None) or None


def _answer_margin(model, last_hidden, yes_id: int, no_id: int):
    """``[n]`` float32 ``l_yes - l_no`` from ``last_hidden: [n, H]``, folded when possible."""
    cap = _softcap(model)
    if cap:
        head = model.get_output_embeddings()
        logits = last_hidden @ head.weight[[yes_id, no_id]].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[yes_id, no_id]]
        logits = (logits / cap).tanh() * cap
        return (logits[:, 0] - logits[:, 1]).float()
    vector, offset = folded_answer_vector(model, yes_id, no_id)
    return (last_hidden @ vector + offset).float()


def _in_length_batches(torch, rows: Sequence[Sequence[int]], size: int, run):
    """``run`` over batches of ``rows`` sorted longest first (less padding); ``[n]`` results
    concatenated back in the order of ``rows``."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    results = torch.cat([run([rows[i] for i in batch]) for batch in _batches(order, size)])
    inverse = torch.empty(len(order), dtype=torch.long, device=results.device)
    inverse[torch.as_tensor(order, device=results.device)] = torch.arange(
        len(order), device=results.device
    )
    return results[inverse]


def _right_pad(torch, rows: Sequence[Sequence[int]], device):
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long, device=device)
    width = int(lengths.max())
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long, device=device)
        mask[i, : len(row)] = 1
    return ids, mask, lengths


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_ids(prefix_ids, candidate_ids, batch_size) -> None:
    if len(prefix_ids) < 1:
        raise SearchInputError("prefix_ids is empty; the prefix needs at least one token")
    if len(candidate_ids) < 1 or any(len(row) < 1 for row in candidate_ids):
        raise SearchInputError("candidate_ids must be a non-empty list of non-empty id lists")
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise SearchInputError(f"batch_size must be an int >= 1; got {batch_size!r}")
