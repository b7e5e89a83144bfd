"""The zero-shot head: a cross-encoder that ranks with no training, from a bi-encoder checkpoint.

One joint forward pass of the encoder over ``[CLS] query [SEP] passage [SEP]``, then::

    score(q, p) = scale * cos(mean_{i in Q} h_i, mean_{j in P} h_j)

with ``h`` the last hidden states, ``Q`` the query segment's word pieces (token type 0) and ``P``
the passage segment's (token type 1), ``[CLS]``, ``[SEP]`` and padding excluded
(:func:`segment_cosine`). all-MiniLM-L6-v2 was trained so that the mean-pooled states of related
texts point the same way; read jointly, every query piece also attends to the passage, so the
cosine ranks passages before any training (see docs/search.md for its nDCG on the shipped
MS MARCO subset). ``scale`` is one learnable scalar, kept as
its log and starting at :data:`INITIAL_SCALE` (the usual scale of cosine scores in contrastive
losses such as sentence-transformers' MultipleNegativesRankingLoss), so the same network
fine-tunes with the listwise loss; the untrained ranking does not depend on it.

:class:`ZeroShotCrossEncoder` offers what the teachers and the serving stack use of a
sentence-transformers ``CrossEncoder``: ``preprocess(pairs)``, ``forward(features)["scores"]``,
``tokenizer``, ``max_seq_length``, ``save_pretrained(path)`` and ``model`` (a BERT-style module
whose ``base_model_prefix`` names its encoder, so layer freezing, pruning and int8 quantisation
treat it like the fresh head's). It imports torch at import time: import it when it is used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from winnow.common.causal_lm import save_pretrained_quietly
from winnow.common.extras import require
from winnow.common.runs import atomic_write_text

torch = require("torch", "search")
transformers = require("transformers", "search")

__all__ = [
    "INITIAL_SCALE",
    "ZERO_SHOT_FILE",
    "SegmentCosineModel",
    "ZeroShotCrossEncoder",
    "load_zero_shot",
    "segment_cosine",
]

INITIAL_SCALE = 20.0
ZERO_SHOT_FILE = "winnow_zero_shot.json"


def segment_cosine(hidden, input_ids, attention_mask, token_type_ids, separator_ids):
    """Cosine of the mean-pooled query and passage segments of joint ``(query, passage)`` inputs.

    Shape:
        hidden: ``[B, L, H]`` float last hidden states. input_ids, attention_mask,
        token_type_ids: ``[B, L]`` int (token type 0 = ``[CLS] query [SEP]``, 1 = ``passage
        [SEP]``). separator_ids: ``[S]`` int ids excluded from both segments (``[CLS]``,
        ``[SEP]``). Returns ``[B]`` float in ``[-1, 1]``; 0 when a segment is empty.
    """
    content = attention_mask.bool() & ~torch.isin(input_ids, separator_ids)
    query = (content & (token_type_ids == 0)).unsqueeze(-1).to(hidden.dtype)
    passage = (content & (token_type_ids == 1)).unsqueeze(-1).to(hidden.dtype)
    query_mean = (hidden * query).sum(dim=1) / query.sum(dim=1).clamp_min(1)
    passage_mean = (hidden * passage).sum(dim=1) / passage.sum(dim=1).clamp_min(1)
    return torch.nn.functional.cosine_similarity(query_mean, passage_mean, dim=-1)


class SegmentCosineModel(torch.nn.Module):
    """A BERT-style encoder and a learnable log-scale: ``exp(log_scale) * segment_cosine``."""

    base_model_prefix = "bert"

    def __init__(self, encoder, separator_ids: list[int], log_scale: float):
        super().__init__()
        self.bert = encoder
        self.log_scale = torch.nn.Parameter(torch.tensor(float(log_scale)))
        self.register_buffer("separator_ids", torch.tensor(separator_ids), persistent=False)

    @property
    def config(self):
        return self.bert.config

    def forward(self, input_ids, attention_mask, token_type_ids):
        """``[B]`` float scores of tokenised ``(query, passage)`` pairs."""
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        cosine = segment_cosine(
            hidden, input_ids, attention_mask, token_type_ids, self.separator_ids
        )
        return self.log_scale.exp() * cosine


class ZeroShotCrossEncoder(torch.nn.Module):
    """Tokeniser plus :class:`SegmentCosineModel`, shaped like a sentence-transformers
    ``CrossEncoder`` where the teachers and the serving stack use one (see the module doc)."""

    def __init__(self, model: SegmentCosineModel, tokenizer, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = max_length

    def preprocess(self, pairs: list[tuple[str, str]]) -> dict:
        """Joint inputs ``[CLS] query [SEP] passage [SEP]``, cut longest-first at
        ``max_seq_length`` word pieces and padded to the longest pair."""
        queries, passages = zip(*pairs, strict=True) if pairs else ((), ())
        return dict(
            self.tokenizer(
                list(queries),
                list(passages),
                padding=True,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_tensors="pt",
                return_token_type_ids=True,
            )
        )

    def forward(self, features: dict) -> dict:
        """``{"scores": [B] float}`` of :meth:`preprocess` output."""
        scores = self.model(
            features["input_ids"], features["attention_mask"], features["token_type_ids"]
        )
        return {"scores": scores}

    def save_pretrained(self, path: str | Path) -> None:
        """The encoder and tokenizer as a transformers folder, the scale in ``ZERO_SHOT_FILE``."""
        path = Path(path)
        save_pretrained_quietly(self.model.bert, path)
        save_pretrained_quietly(self.tokenizer, path)
        record = {"log_scale": float(self.model.log_scale.detach())}
        atomic_write_text(path / ZERO_SHOT_FILE, json.dumps(record, indent=2) + "\n")


def load_zero_shot(location: str, max_length: int, device: str) -> ZeroShotCrossEncoder:
    """A :class:`ZeroShotCrossEncoder` over the BERT-style encoder at ``location`` (hub id or
    folder); its scale from ``ZERO_SHOT_FILE`` when the folder was saved by one, else
    :data:`INITIAL_SCALE`. Nothing is initialised at random."""
    record_path = Path(location) / ZERO_SHOT_FILE
    log_scale = math.log(INITIAL_SCALE)
    if record_path.is_file():
        log_scale = json.loads(record_path.read_text(encoding="utf-8"))["log_scale"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(location)
    encoder = transformers.AutoModel.from_pretrained(location)
    separators = [tokenizer.cls_token_id, tokenizer.sep_token_id]
    model = SegmentCosineModel(encoder, separators, log_scale)
    return ZeroShotCrossEncoder(model, tokenizer, max_length).to(device)
