"""Student ranker: a pruned, short-input cross-encoder distilled from several teachers.

The student is the network of :class:`~winnow.search.cross_encoder.CrossEncoderTeacher` (the
bundled all-MiniLM-L6-v2 encoder, or any BERT-style folder, e.g. a trained teacher, with a fresh
one-output head or the zero-shot segment-cosine head, ``head``) cut down twice to be cheaper to
serve:

- **structured layer pruning**: only the first ``num_layers`` transformer layers are kept
  (default 2 of 6, about a third of the encoder's compute per token);
- **shorter inputs**: ``max_length`` word pieces per ``(query, passage)`` pair (default 96).

Training is multi-teacher distillation on precomputed teacher scores (the student never runs a
teacher). For each query list and each teacher ``t`` with weight ``w_t > 0``::

    loss(list) = sum_t w_t * L(student_scores, teacher_scores_t)

with ``L`` from :data:`~winnow.search.losses.LOSSES`: ``"listwise"`` (default) is ListNet's
softmax cross-entropy against the soft targets ``softmax(norm(teacher_scores_t) / temperature)``;
``"mse"`` regresses ``norm(teacher_scores_t)``. ``norm`` is ``target_norm``
(:data:`~winnow.search.losses.TARGET_NORMS`): ``"standardize"`` (default) z-scores each
teacher's scores per list, so a teacher whose logits spread little (sd ~0.6 per list for the
MiniLM teachers, nearly flat soft targets) teaches an order as sharply as one whose logits
spread a lot, and teachers on different scales weigh what ``teacher_weights`` says;
``"none"`` uses the logits as they are. ``NaN`` teacher scores are masked out of that
teacher's term; a teacher with no score in a list adds nothing for it; candidates no weighted
teacher scores never reach the model. A teacher of weight 0 is dropped before training, so it
changes nothing. The loss is per list (:func:`distillation_loss`, ``[B]``), reduced by an
explicit mean over lists.

Example::

    teachers = {"relevance": relevance, "engagement": engagement}   # fitted teachers
    scores = precompute_teacher_scores(teachers, lists)
    student = StudentRanker(teacher_weights={"relevance": 1.0, "engagement": 0.5}).fit(
        lists, scores
    )
    student.score("cheap flights", docs)                              # [len(docs)] float64
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from winnow.common.causal_lm import save_pretrained_quietly
from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.cross_encoder import HEADS, CandidateList, CrossEncoderTeacher
from winnow.search.datasets import Query
from winnow.search.exceptions import SearchInputError
from winnow.search.fitting import StepCallback, report_step, torch_threads
from winnow.search.losses import LOSSES, TARGET_NORMS

__all__ = [
    "DEFAULT_TEACHER_WEIGHTS",
    "StudentRanker",
    "distillation_loss",
    "precompute_teacher_scores",
    "prune_layers",
]

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_WEIGHTS = {"relevance": 1.0, "engagement": 0.5}
STUDENT_FILE = "winnow_student.json"


def distillation_loss(
    scores,
    teacher_scores,
    weights,
    temperature: float = 1.0,
    loss: str = "listwise",
    target_norm: str = "standardize",
):
    """Weighted sum over teachers of a per-list ranking loss against each teacher's scores.

    Shape:
        scores: ``[B, k]`` float student logits. teacher_scores: ``[T, B, k]`` float teacher
        logits, ``NaN`` where teacher ``t`` has no score (and on padding). weights: ``[T]``
        float >= 0. Returns ``[B]`` float: ``sum_t w_t * LOSSES[loss](scores, y_t, finite_t,
        temperature)`` with ``y_t = TARGET_NORMS[target_norm](s_t, finite_t)`` (per row, over
        the teacher's finite entries), a teacher with no finite score in a row contributing 0.

    Entries that are ``NaN`` for a teacher change neither its term nor any gradient.
    """
    torch = require("torch", "search")
    finite = torch.isfinite(teacher_scores)
    targets = torch.nan_to_num(teacher_scores, nan=0.0, posinf=0.0, neginf=0.0)
    normalise = TARGET_NORMS[target_norm]
    per_teacher = torch.stack(
        [
            LOSSES[loss](scores, normalise(targets[t], finite[t]), finite[t], temperature)
            for t in range(len(targets))
        ]
    )
    per_teacher = torch.where(finite.any(dim=-1), per_teacher, torch.zeros_like(per_teacher))
    weights = torch.as_tensor(weights, dtype=scores.dtype).reshape(-1, 1)
    return (weights * per_teacher).sum(dim=0)


def precompute_teacher_scores(
    teachers: Mapping[str, object], lists: Sequence[CandidateList]
) -> dict[str, list[np.ndarray]]:
    """``{name: [scores [k_i] float64 per list]}``: each teacher's ``score(query, docs)``."""
    return {
        name: [np.asarray(teacher.score(e.query, e.docs), dtype=np.float64) for e in lists]
        for name, teacher in teachers.items()
    }


class StudentRanker:
    """A layer-pruned cross-encoder trained by multi-teacher distillation (see the module doc).

    Args:
        model: ``None`` for the bundled all-MiniLM-L6-v2, or a hub id / folder of a BERT-style
            checkpoint or cross-encoder (e.g. a saved teacher); its first ``num_layers`` kept.
        num_layers: transformer layers kept (structured pruning), at most the model's.
        head: ``"fresh"`` (a new linear head on ``[CLS]``: ranks at random before training) or
            ``"zero_shot"`` (the scaled cosine of the query and passage segments of the pruned
            encoder: distillation starts from a ranking); see
            :data:`~winnow.search.cross_encoder.HEADS`.
        max_length: word pieces per ``(query, passage)`` pair, truncated longest-first.
        teacher_weights: ``{teacher name: weight >= 0}``, at least one weight > 0; ``None``
            means ``DEFAULT_TEACHER_WEIGHTS``.
        loss: ``"listwise"`` or ``"mse"`` (:data:`~winnow.search.losses.LOSSES`).
        temperature: softmax temperature on the (normalised) teacher logits (soft targets).
        target_norm: ``"standardize"`` (z-scores per list and teacher) or ``"none"``
            (:data:`~winnow.search.losses.TARGET_NORMS`), applied before ``temperature``.
        The remaining arguments are those of
        :class:`~winnow.search.cross_encoder.CrossEncoderTeacher` (optimiser, steps, seed,
        threads, device).

    Fitted attributes: ``network_`` (a :class:`CrossEncoderTeacher` holding the pruned
    ``model_``), ``teachers_`` (names trained on, weight > 0), ``history_`` (loss per step).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        num_layers: int = 2,
        head: str = "fresh",
        max_length: int = 96,
        teacher_weights: Mapping[str, float] | None = None,
        loss: str = "listwise",
        temperature: float = 1.0,
        target_norm: str = "standardize",
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
    ):
        if not isinstance(num_layers, Integral) or isinstance(num_layers, bool) or num_layers < 1:
            raise SearchInputError(f"num_layers must be an int >= 1; got {num_layers!r}")
        weights = dict(DEFAULT_TEACHER_WEIGHTS if teacher_weights is None else teacher_weights)
        bad = {
            k: v
            for k, v in weights.items()
            if not isinstance(v, Real) or isinstance(v, bool) or not 0 <= v < math.inf
        }
        if not weights or bad or not any(v > 0 for v in weights.values()):
            raise SearchInputError(
                "teacher_weights must map teacher names to finite numbers >= 0, at least one "
                f"> 0, e.g. {DEFAULT_TEACHER_WEIGHTS}; got {teacher_weights!r}"
            )
        if target_norm not in TARGET_NORMS:
            raise SearchInputError(
                f"target_norm must be one of {sorted(TARGET_NORMS)}; got {target_norm!r}"
            )
        self.model = model
        self.num_layers = num_layers
        self.head = head
        self.max_length = max_length
        self.teacher_weights = weights
        self.loss = loss
        self.temperature = temperature
        self.target_norm = target_norm
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
        self._network()  # validates the shared settings before any model loads

    def fit(
        self,
        lists: Sequence[CandidateList],
        teacher_scores: Mapping[str, Sequence],
        on_step: StepCallback | None = None,
    ) -> StudentRanker:
        """Distil from ``teacher_scores`` (``{name: [[k_i] float per list]}``, ``NaN`` = none);
        ``on_step`` receives each step's ``{"step", "loss", "lr"}``."""
        torch = require("torch", "search")
        self.teachers_ = [name for name, w in self.teacher_weights.items() if w > 0]
        lists, targets = _aligned_targets(list(lists), teacher_scores, self.teachers_)
        total = math.ceil(len(lists) / self.lists_per_step) * self.epochs
        network = self._network()
        logger.info(
            "distilling a %d-layer student from %s (%s): %d lists, %d steps",
            self.num_layers,
            network.model_location(),
            ", ".join(self.teachers_),
            len(lists),
            total,
        )
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = HEADS[self.head](network.model_location(), self.max_length, self.device)
            network.model_ = prune_layers(model, self.num_layers)
            self.network_ = network
            self.history_: list[float] = []
            self._train(lists, targets, total, on_step)
            network.model_.eval()
        return self

    def batch_loss(self, lists: Sequence[CandidateList], targets: Sequence[np.ndarray]):
        """Mean :func:`distillation_loss` over ``lists`` (scalar tensor with gradient).

        ``targets[i]`` is ``[len(self.teachers_), k_i]`` float teacher scores of ``lists[i]``
        (``NaN`` = no score), in the order of ``teachers_``.
        """
        _check_fitted(self)
        torch = require("torch", "search")
        kept = [np.flatnonzero(np.isfinite(t).any(axis=0)) for t in targets]
        pairs = [(e.query, e.docs[i]) for e, idx in zip(lists, kept, strict=True) for i in idx]
        flat = self.network_._forward(pairs)
        width = max(len(idx) for idx in kept)
        mask = torch.zeros((len(lists), width), dtype=torch.bool)
        padded = torch.full((len(self.teachers_), len(lists), width), math.nan, dtype=flat.dtype)
        for row, (t, idx) in enumerate(zip(targets, kept, strict=True)):
            mask[row, : len(idx)] = True
            padded[:, row, : len(idx)] = torch.as_tensor(t[:, idx], dtype=flat.dtype)
        scores = torch.zeros((len(lists), width), dtype=flat.dtype).masked_scatter(mask, flat)
        weights = [float(self.teacher_weights[name]) for name in self.teachers_]
        per_list = distillation_loss(
            scores, padded, weights, self.temperature, self.loss, self.target_norm
        )
        return per_list.mean()

    def score(self, query: Query | str, docs: Sequence) -> np.ndarray:
        """``[len(docs)]`` float64 logits of ``(query, doc)`` pairs; docs are texts or Passages."""
        _check_fitted(self)
        return self.network_.score(query, docs)

    def save(self, path: str | Path) -> Path:
        """Write the pruned cross-encoder and ``winnow_student.json`` (settings, history)."""
        _check_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained_quietly(self.network_.model_, path)
        record = {
            "params": {**self.get_params(), "model": self.network_.model_id},
            "teachers": self.teachers_,
            "history": self.history_,
        }
        atomic_write_text(path / STUDENT_FILE, json.dumps(record, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, **overrides) -> StudentRanker:
        """A student saved by :meth:`save` (its config already has ``num_layers`` layers)."""
        record_path = Path(path) / STUDENT_FILE
        if not record_path.is_file():
            raise SearchInputError(f"{record_path} not found; save a student there first")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        student = cls(**{**record["params"], **overrides, "model": str(path)})
        network = student._network()
        model = HEADS[student.head](str(path), student.max_length, student.device)
        network.model_ = prune_layers(model, student.num_layers)
        network.model_.eval()
        student.network_ = network
        student.teachers_ = list(record["teachers"])
        student.history_ = list(record["history"])
        return student

    def get_params(self) -> dict:
        """The ``__init__`` arguments, as in scikit-learn."""
        names = list(inspect.signature(StudentRanker.__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def _network(self) -> CrossEncoderTeacher:
        """The cross-encoder wrapper that runs, optimises and scores the student's model."""
        shared = set(inspect.signature(CrossEncoderTeacher.__init__).parameters) - {"self"}
        params = {k: v for k, v in self.get_params().items() if k in shared}
        return CrossEncoderTeacher(**params, name="student")

    def _train(self, lists, targets, total: int, on_step) -> None:
        torch = require("torch", "search")
        network = self.network_
        optimizer, schedule = network._optimizer(total)
        order_rng = np.random.default_rng(self.seed)
        network.model_.train()
        with track_progress("distilling the student", total, self.quiet) as bar:
            for _ in range(self.epochs):
                order = order_rng.permutation(len(lists))
                for start in range(0, len(lists), self.lists_per_step):
                    chosen = order[start : start + self.lists_per_step]
                    lr = schedule.get_last_lr()[0]
                    loss = self.batch_loss([lists[i] for i in chosen], [targets[i] for i in chosen])
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(network.model_.parameters(), self.max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    report_step(self.history_, float(loss.detach()), lr, bar, on_step)


def prune_layers(cross_encoder, num_layers: int):
    """Keep the first ``num_layers`` transformer layers of a BERT-style cross-encoder."""
    torch = require("torch", "search")
    network = cross_encoder.model
    encoder = getattr(network, network.base_model_prefix).encoder
    if num_layers > len(encoder.layer):
        raise SearchInputError(
            f"num_layers must be <= {len(encoder.layer)} (the model's layers); got {num_layers}"
        )
    encoder.layer = torch.nn.ModuleList(encoder.layer[:num_layers])
    network.config.num_hidden_layers = num_layers
    return cross_encoder


def _aligned_targets(
    lists: list[CandidateList], teacher_scores: Mapping[str, Sequence], names: list[str]
) -> tuple[list[CandidateList], list[np.ndarray]]:
    """Lists some teacher scores, each with its ``[len(names), k]`` float64 teacher scores."""
    if not lists:
        raise SearchInputError("lists is empty; build them with build_candidate_lists(...)")
    missing = [name for name in names if name not in teacher_scores]
    if missing:
        raise SearchInputError(
            f"teacher_scores has no scores for {missing} (weighted in teacher_weights); "
            f"got teachers {sorted(teacher_scores)}; give them weight 0 or pass their scores"
        )
    for name in names:
        if len(teacher_scores[name]) != len(lists):
            raise SearchInputError(
                f"teacher_scores[{name!r}] has {len(teacher_scores[name])} lists; "
                f"expected one per candidate list ({len(lists)})"
            )
    kept, targets = [], []
    for i, entry in enumerate(lists):
        rows = [np.asarray(teacher_scores[name][i], dtype=np.float64) for name in names]
        for name, row in zip(names, rows, strict=True):
            if row.shape != (len(entry.docs),):
                raise SearchInputError(
                    f"teacher_scores[{name!r}][{i}] has shape {row.shape}; expected "
                    f"({len(entry.docs)},), one score per doc of query {entry.query_id!r}"
                )
        stacked = np.stack(rows)
        if np.isfinite(stacked).any():
            kept.append(entry)
            targets.append(stacked)
    if not kept:
        raise SearchInputError(f"no list has a finite score from the teachers {names}")
    if len(kept) < len(lists):
        logger.info("%d lists without any teacher score skipped", len(lists) - len(kept))
    return kept, targets


def _check_fitted(student: StudentRanker) -> None:
    if not hasattr(student, "network_"):
        raise SearchInputError(
            "the student is not fitted; call .fit(lists, teacher_scores) or StudentRanker.load"
        )
