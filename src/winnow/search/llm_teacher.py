"""An LLM relevance teacher: a causal LM's yes/no answer margin, fine-tuned on graded lists.

The interface of :class:`~winnow.search.cross_encoder.CrossEncoderTeacher`::

    teacher = LLMRelevanceTeacher().fit(lists)          # bundled SmolLM2-135M-Instruct, LoRA
    teacher.score(query, docs) -> np.ndarray [len(docs)] float64   (higher = more relevant)

The score is the answer margin ``l_yes - l_no`` of the next token after the prompt
(:mod:`winnow.search.prefill_scoring`: one dot product with the folded answer vector, prefill only);
``sigmoid(score)`` is the model's P(yes). An unfitted model already ranks (zero-shot:
``LLMRelevanceTeacher.from_pretrained(model)`` or ``.load(hub_id_or_folder)``); fitting moves
the margins towards the labels.

Prompt (:func:`relevance_prompt_ids`): one user turn ``policy, "Query: q", "Passage:", passage,
question`` through the tokenizer's chat template when it has one (then the assistant turn's
start), else the plain text and a newline. Everything before the passage is the prefix, computed
once per query; the passage (stripped, truncated to ``max_passage_tokens``) and the rest are the
candidate. Prefix, passage and the rest are tokenised separately and their ids concatenated, so
training, cached scoring and full-sequence scoring read the very same tokens.

Fine-tuning (:data:`FINETUNING`), on the top ``trainable_layers`` decoder layers (default 2;
``None``: all):

- ``"lora"``: rank-``lora_rank`` adapters on every linear layer of those blocks (``peft``),
  merged into the weights after fitting, so scoring costs what the base model costs;
- ``"top_layers"``: those blocks and the final norm trained in full.

Embeddings and the output layer stay frozen (often tied, and they hold the answer rows). Only
the trained tensors are saved (:meth:`LLMRelevanceTeacher.save`); loading rebuilds the base
model and applies them.

Loss per candidate list: :data:`~winnow.search.losses.LOSSES` on the margins with the labels
divided by the top of their scale (``SCALE_MAX``), as the cross-encoder teachers do, plus
``pointwise_weight`` times :func:`pointwise_bce_loss` (binary: normalised label >= 2/3, grade 2
or more). Each list runs prefix-cached with gradient, and is backpropagated on its own (memory
of one list), gradients summed over ``lists_per_step`` lists per optimiser step.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path

import numpy as np

from winnow.common.causal_lm import bundled_smollm2, load_causal_lm
from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.cross_encoder import SCALE_MAX, CandidateList, _check_lists
from winnow.search.datasets import Query
from winnow.search.exceptions import SearchInputError
from winnow.search.fitting import (
    adamw_with_warmup,
    check_choice,
    check_int,
    check_optional_int,
    check_positive,
    check_unit_interval,
    report_step,
    torch_threads,
)
from winnow.search.losses import LOSSES
from winnow.search.prefill_scoring import answer_token_ids, score_with_prefix_cache

__all__ = [
    "FINETUNING",
    "RELEVANCE_POLICY",
    "RELEVANCE_QUESTION",
    "LLMRelevanceTeacher",
    "pointwise_bce_loss",
    "relevance_prompt_ids",
]

logger = logging.getLogger(__name__)

RELEVANCE_POLICY = """\
You judge search results. A passage is relevant when it answers the search query, fully or in \
part. A passage that is only about the same topic, without answering the query, is not \
relevant."""
RELEVANCE_QUESTION = "Is the passage relevant to the query? Answer yes or no."

TEACHER_FILE = "winnow_llm_teacher.json"
WEIGHTS_FILE = "trained_weights.safetensors"
RELEVANT_FRACTION = 2 / 3  # grade 2 of 3: TREC DL's "highly relevant" and above
_MARK = "\x00passage\x00"


def relevance_prompt_ids(
    tokenizer,
    query: str,
    passages: Sequence[str],
    policy: str = RELEVANCE_POLICY,
    question: str = RELEVANCE_QUESTION,
    chat_template: bool = True,
    max_passage_tokens: int | None = None,
) -> tuple[list[int], list[list[int]]]:
    """``(prefix_ids, candidate_ids)`` of the relevance prompt for one query.

    ``prefix_ids``: ``[P]``, the prompt up to and including ``"Passage:\\n"``;
    ``candidate_ids``: ``n`` lists, each ``passage[:max_passage_tokens] + rest``, where the rest
    is ``"\\n" + question`` and the assistant turn's start (chat template) or a newline. With a
    chat template the tokenizer's special tokens come from the template only.
    """
    use_chat = bool(chat_template and getattr(tokenizer, "chat_template", None))
    content = f"{policy}\n\nQuery: {query.strip()}\nPassage:\n{_MARK}\n{question}"
    if use_chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = content + "\n"
    if text.count(_MARK) != 1:
        raise SearchInputError(
            "the chat template dropped or repeated the passage; pass chat_template=False"
        )
    head, tail = text.split(_MARK)
    prefix_ids = tokenizer(head, add_special_tokens=not use_chat)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    texts = [passage.strip() for passage in passages]
    passage_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    candidate_ids = [list(ids[:max_passage_tokens]) + list(tail_ids) for ids in passage_ids]
    return list(prefix_ids), candidate_ids


def pointwise_bce_loss(scores, targets, mask, threshold: float = RELEVANT_FRACTION):
    """Binary cross-entropy of ``sigmoid(scores)`` against ``targets >= threshold``, per list.

    Shape:
        scores: ``[B, k]`` float margins (logits). targets: ``[B, k]`` labels normalised to
        ``[0, 1]``. mask: ``[B, k]`` bool. Returns ``[B]`` float: the mean over masked-in
        entries; masked-out entries get zero gradient.
    """
    torch = require("torch", "search")
    binary = (targets >= threshold).to(scores.dtype)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(scores, binary, reduction="none")
    losses = torch.where(mask, losses, torch.zeros_like(losses))
    return losses.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1)


def _lora_parameters(teacher: LLMRelevanceTeacher, model, layers: list[int]) -> list:
    """Inject LoRA adapters into every linear layer of ``layers``; their weights train."""
    torch = require("torch", "search")
    peft = require("peft", "search")
    blocks = model.get_decoder().layers
    linear = {id(m) for i in layers for m in blocks[i].modules() if isinstance(m, torch.nn.Linear)}
    config = peft.LoraConfig(
        r=teacher.lora_rank,
        lora_alpha=teacher.lora_alpha,
        lora_dropout=teacher.lora_dropout,
        target_modules=[name for name, m in model.named_modules() if id(m) in linear],
    )
    peft.inject_adapter_in_model(config, model)
    chosen = []
    for name, parameter in model.named_parameters():
        keep = "lora_" in name
        parameter.requires_grad_(keep)
        if keep:
            chosen.append(parameter)
    return chosen


def _top_layer_parameters(teacher: LLMRelevanceTeacher, model, layers: list[int]) -> list:
    """Train ``layers`` of the decoder and its final norm in full; freeze everything else."""
    decoder = model.get_decoder()
    chosen = [*(p for i in layers for p in decoder.layers[i].parameters())]
    norm = getattr(decoder, "norm", None)
    if norm is not None:
        chosen.extend(norm.parameters())
    trained = {id(p) for p in chosen}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trained)
    return chosen


FINETUNING: dict[str, Callable] = {"lora": _lora_parameters, "top_layers": _top_layer_parameters}


class LLMRelevanceTeacher:
    """A causal-LM relevance teacher scoring the yes/no answer margin (see the module doc).

    Args:
        model: ``None`` for the bundled SmolLM2-135M-Instruct GGUF
            (:func:`~winnow.common.causal_lm.bundled_smollm2`), or a hub id / local folder.
        gguf_file: GGUF file inside ``model``'s folder; ``None`` loads safetensors.
        name: what the teacher learns; saved with it.
        policy, question: the prompt's instruction and closing question.
        yes, no: answer strings, one token each right after the prompt (``"Yes"``/``"No"``
            after SmolLM2's ``"<|im_start|>assistant\\n"``).
        chat_template: wrap the prompt in the tokenizer's chat template when it has one.
        finetune: ``"lora"`` or ``"top_layers"`` (:data:`FINETUNING`).
        trainable_layers: how many top decoder layers are adapted; ``None`` for all. Below
            them nothing needs gradient, so a step costs about one forward pass; adapting all
            layers is 2.5x slower and keeps every layer's activations of a list (SmolLM2, 30
            candidates of ~117 tokens: 12 GB instead of 1.6 GB).
        lora_rank, lora_alpha, lora_dropout: LoRA settings (``finetune="lora"``).
        loss: ``"listwise"`` or ``"mse"`` (:data:`~winnow.search.losses.LOSSES`) on margins.
        temperature: target softmax temperature on labels normalised to ``[0, 1]``.
        pointwise_weight: weight of :func:`pointwise_bce_loss` added to ``loss``; 0 for none.
        max_passage_tokens: passage tokens kept per candidate.
        learning_rate, weight_decay, warmup_ratio, max_grad_norm: AdamW with linear warmup
            and linear decay to 0, gradient-norm clipping.
        epochs: passes over the lists (0: ``fit`` loads the model and trains nothing);
            lists_per_step: lists per optimiser step.
        forward_batch_size: candidates per forward pass (training and scoring).
        seed: seeds the adapter initialisation and the list order.
        num_threads: torch CPU threads while fitting and scoring; ``None`` leaves the setting.
        dtype, device: the model's torch dtype name and device.

    Fitted attributes: ``model_``, ``tokenizer_``, ``yes_id_``, ``no_id_``, ``history_`` (loss
    per step), ``trained_names_`` (parameters that were trained, saved by :meth:`save`).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        gguf_file: str | None = None,
        name: str = "relevance",
        policy: str = RELEVANCE_POLICY,
        question: str = RELEVANCE_QUESTION,
        yes: str = "Yes",
        no: str = "No",
        chat_template: bool = True,
        finetune: str = "lora",
        trainable_layers: int | None = 2,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        loss: str = "listwise",
        temperature: float = 1 / 3,
        pointwise_weight: float = 0.0,
        max_passage_tokens: int = 160,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        max_grad_norm: float = 1.0,
        epochs: int = 1,
        lists_per_step: int = 1,
        forward_batch_size: int = 16,
        seed: int = 0,
        num_threads: int | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        quiet: bool = False,
    ):
        check_choice("finetune", finetune, FINETUNING)
        check_choice("loss", loss, LOSSES)
        for label, value, low in (
            ("lora_rank", lora_rank, 1),
            ("max_passage_tokens", max_passage_tokens, 1),
            ("epochs", epochs, 0),
            ("lists_per_step", lists_per_step, 1),
            ("forward_batch_size", forward_batch_size, 1),
        ):
            check_int(label, value, low)
        for label, value in (
            ("temperature", temperature),
            ("learning_rate", learning_rate),
            ("lora_alpha", lora_alpha),
        ):
            check_positive(label, value)
        if not isinstance(pointwise_weight, Real) or pointwise_weight < 0:
            raise SearchInputError(f"pointwise_weight must be >= 0; got {pointwise_weight!r}")
        check_unit_interval("warmup_ratio", warmup_ratio)
        check_unit_interval("lora_dropout", lora_dropout)
        check_optional_int("trainable_layers", trainable_layers, 1)
        check_optional_int("num_threads", num_threads, 1)
        self.model = model
        self.gguf_file = gguf_file
        self.name = name
        self.policy = policy
        self.question = question
        self.yes = yes
        self.no = no
        self.chat_template = chat_template
        self.finetune = finetune
        self.trainable_layers = trainable_layers
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.loss = loss
        self.temperature = temperature
        self.pointwise_weight = pointwise_weight
        self.max_passage_tokens = max_passage_tokens
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_grad_norm = max_grad_norm
        self.epochs = epochs
        self.lists_per_step = lists_per_step
        self.forward_batch_size = forward_batch_size
        self.seed = seed
        self.num_threads = num_threads
        self.dtype = dtype
        self.device = device
        self.quiet = quiet

    def fit(self, lists: Sequence[CandidateList], on_step=None) -> LLMRelevanceTeacher:
        """Fine-tune on candidate lists (labels ``NaN`` = excluded); returns ``self``.
        ``on_step`` receives each step's ``{"step", "loss", "lr"}``."""
        torch = require("torch", "search")
        lists = _check_lists(lists)
        total = math.ceil(len(lists) / self.lists_per_step) * self.epochs
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._load_base()
            self.history_: list[float] = []
            self.trained_names_: list[str] = []
            if total:
                self._train(lists, total, on_step)
        return self

    def list_loss(self, entry: CandidateList):
        """Loss of the model on one list (a scalar tensor with gradient)."""
        torch = require("torch", "search")
        _check_fitted(self)
        kept = np.flatnonzero(entry.labelled)
        margins = self._margins(entry.query, [entry.docs[i] for i in kept])[None]
        normalised = entry.labels[kept] / SCALE_MAX[entry.scale]
        targets = torch.as_tensor(normalised, dtype=margins.dtype, device=margins.device)[None]
        mask = torch.ones_like(margins, dtype=torch.bool)
        loss = LOSSES[self.loss](margins, targets, mask, self.temperature)
        if self.pointwise_weight:
            loss = loss + self.pointwise_weight * pointwise_bce_loss(margins, targets, mask)
        return loss[0]

    def score(self, query: Query | str, docs: Sequence) -> np.ndarray:
        """``[len(docs)]`` float64 margins ``l_yes - l_no``; docs are texts or Passages."""
        _check_fitted(self)
        torch = require("torch", "search")
        if not docs:
            return np.zeros(0, dtype=np.float64)
        query_text = query if isinstance(query, str) else query.text
        texts = [doc if isinstance(doc, str) else doc.text for doc in docs]
        with torch_threads(self.num_threads), torch.no_grad():
            margins = self._margins(query_text, texts)
        return margins.double().cpu().numpy().reshape(len(texts))

    def save(self, path: str | Path) -> Path:
        """Write the trained tensors and ``winnow_llm_teacher.json`` (settings, history)."""
        _check_fitted(self)
        safetensors_torch = require("safetensors.torch", "search")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        parameters = dict(self.model_.named_parameters())
        tensors = {name: parameters[name].detach().contiguous() for name in self.trained_names_}
        if tensors:
            safetensors_torch.save_file(tensors, str(path / WEIGHTS_FILE))
        record = {
            "params": {
                **self.get_params(),
                "model": None if self.model is None else str(self.model),
            },
            "history": self.history_,
            "trained": list(self.trained_names_),
        }
        atomic_write_text(path / TEACHER_FILE, json.dumps(record, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, **params) -> LLMRelevanceTeacher:
        """An untrained (zero-shot) teacher, ready to score: the causal LM at ``model`` as
        loaded (``None``: the bundled SmolLM2); ``params`` go to ``__init__``."""
        teacher = cls(model=model, **params)
        teacher._load_base()
        teacher.history_, teacher.trained_names_ = [], []
        return teacher

    @classmethod
    def load(cls, name_or_path: str | Path, **overrides) -> LLMRelevanceTeacher:
        """A teacher saved by :meth:`save`, or any causal LM by hub id or folder (zero-shot)."""
        record_path = Path(name_or_path) / TEACHER_FILE
        if not record_path.is_file():
            return cls.from_pretrained(str(name_or_path), **overrides)
        record = json.loads(record_path.read_text(encoding="utf-8"))
        teacher = cls(**{**record["params"], **overrides})
        torch = require("torch", "search")
        with torch.random.fork_rng(devices=[]):
            teacher._load_base()
            if record["trained"]:
                teacher._make_trainable()
                safetensors_torch = require("safetensors.torch", "search")
                weights = Path(name_or_path) / WEIGHTS_FILE
                tensors = safetensors_torch.load_file(str(weights))
                if sorted(tensors) != sorted(teacher.trained_names_):
                    raise SearchInputError(
                        f"{weights} holds {len(tensors)} tensors that do not match the "
                        f"{len(teacher.trained_names_)} this teacher's settings train; was it "
                        "saved with other finetune/trainable_layers/model settings?"
                    )
                teacher.model_.load_state_dict(tensors, strict=False)
        teacher.model_.eval()
        _merge_adapters(teacher.model_)
        teacher.history_ = list(record["history"])
        return teacher

    def get_params(self) -> dict:
        """The ``__init__`` arguments, as in scikit-learn."""
        names = list(inspect.signature(LLMRelevanceTeacher.__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def model_location(self) -> tuple[str, str | None]:
        """``(folder or hub id, gguf_file)`` of the base weights (``None``: bundled SmolLM2)."""
        if self.model is None:
            return bundled_smollm2()
        return str(self.model), self.gguf_file

    def _load_base(self) -> None:
        location, gguf_file = self.model_location()
        self.model_, self.tokenizer_ = load_causal_lm(location, gguf_file, self.dtype, self.device)
        self.yes_id_, self.no_id_ = answer_token_ids(self.tokenizer_, self.yes, self.no)

    def _make_trainable(self) -> list:
        depth = len(self.model_.get_decoder().layers)
        count = depth if self.trainable_layers is None else self.trainable_layers
        if count > depth:
            raise SearchInputError(
                f"trainable_layers must be <= {depth} (the model's decoder layers); got {count}"
            )
        parameters = FINETUNING[self.finetune](self, self.model_, list(range(depth - count, depth)))
        self.trained_names_ = [n for n, p in self.model_.named_parameters() if p.requires_grad]
        return parameters

    def _margins(self, query: str, texts: Sequence[str]):
        """``[len(texts)]`` float32 margins, prefix-cached, under the caller's grad mode."""
        prefix_ids, candidate_ids = relevance_prompt_ids(
            self.tokenizer_,
            query,
            texts,
            self.policy,
            self.question,
            self.chat_template,
            self.max_passage_tokens,
        )
        return score_with_prefix_cache(
            self.model_,
            prefix_ids,
            candidate_ids,
            self.yes_id_,
            self.no_id_,
            self.forward_batch_size,
        )

    def _train(self, lists: list[CandidateList], total: int, on_step) -> None:
        parameters = self._make_trainable()
        logger.info(
            "training the %s LLM teacher (%s, %d trained weights): %d lists, %d steps",
            self.name,
            self.finetune,
            sum(p.numel() for p in parameters),
            len(lists),
            total,
        )
        optimizer, schedule = adamw_with_warmup(parameters, self, total)
        order_rng = np.random.default_rng(self.seed)
        self.model_.train()
        with track_progress(f"training {self.name} LLM teacher", total, self.quiet) as bar:
            for _ in range(self.epochs):
                order = order_rng.permutation(len(lists))
                for start in range(0, len(lists), self.lists_per_step):
                    batch = [lists[i] for i in order[start : start + self.lists_per_step]]
                    lr = schedule.get_last_lr()[0]
                    loss = self._step(batch, parameters, optimizer, schedule)
                    report_step(self.history_, loss, lr, bar, on_step)
        self.model_.eval()
        _merge_adapters(self.model_)

    def _step(self, batch: Sequence[CandidateList], parameters, optimizer, schedule) -> float:
        torch = require("torch", "search")
        total = 0.0
        for entry in batch:
            loss = self.list_loss(entry) / len(batch)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return total


def _merge_adapters(model) -> None:
    """Fold LoRA adapters into their base weights (no-op without peft or adapters)."""
    for module in model.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A") and not module.merged:
            module.merge()


def _check_fitted(teacher: LLMRelevanceTeacher) -> None:
    if not hasattr(teacher, "model_"):
        raise SearchInputError(
            "the teacher is not fitted; call .fit(lists) or LLMRelevanceTeacher.load(path)"
        )
