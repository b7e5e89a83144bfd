"""A student made from its teacher by dropping decoder layers (same tokenizer, embeddings, head).

Layer pruning is the cheapest way to a student that shares everything token-level distillation
needs with its teacher: the vocabulary and special tokens are the teacher's by construction, the
kept layers start from the teacher's weights, and the result is an ordinary ``save_pretrained``
folder that every other command loads. What it loses is what distillation has to win back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import pairwise

from torch import nn
from transformers import PreTrainedModel

from winnow.distill.exceptions import DistillInputError

__all__ = ["evenly_spaced_layers", "prune_layers"]


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices out of ``total``, spread evenly and always with the first and the
    last layer (they read the embeddings and write what the head reads)."""
    if not 1 <= keep <= total:
        raise DistillInputError(
            f"cannot keep {keep} of {total} decoder layers; fix: pass a count from 1 to {total}"
        )
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(model: PreTrainedModel, keep: Sequence[int]) -> PreTrainedModel:
    """A copy of ``model`` with only the decoder layers ``keep`` (increasing indices).

    Every other parameter (embeddings, final norm, output head) is copied unchanged, each kept
    layer's attention is renumbered for the KV cache, and the config's ``num_hidden_layers`` (and
    ``layer_types`` where the family has one) describe the result, so ``save_pretrained`` writes
    a folder that loads as a normal model.
    """
    layers = model.get_decoder().layers
    total = len(layers)
    keep = [int(i) for i in keep]
    if not keep or any(b <= a for a, b in pairwise(keep)):
        raise DistillInputError(
            f"keep must be increasing layer indices, got {keep}; fix: e.g. 0,4,8,11"
        )
    if keep[0] < 0 or keep[-1] >= total:
        raise DistillInputError(
            f"keep {keep} names layers outside 0..{total - 1} of this {total}-layer model"
        )
    pruned = copy.deepcopy(model)
    decoder = pruned.get_decoder()
    decoder.layers = nn.ModuleList(decoder.layers[i] for i in keep)
    for index, layer in enumerate(decoder.layers):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    pruned.config.num_hidden_layers = len(keep)
    layer_types = getattr(pruned.config, "layer_types", None)
    if layer_types is not None:
        pruned.config.layer_types = [layer_types[i] for i in keep]
    return pruned
