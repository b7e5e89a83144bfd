"""Supervised fine-tuning with teacher forcing: how the teacher and the starting student are made.

A distillation experiment needs a strong teacher and a weaker student of the same tokenizer; on
synthetic tasks both come from training on reference answers, the student for fewer steps. The
batch is laid out exactly like a rollout (the reference answer plus EOS stands where a sampled
response would), so the loss rows are the ones on-policy training later uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from winnow.common.runs import atomic_path, atomic_write_text
from winnow.distill.checkpoints import STATE_FILE
from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import encode_prompts, hidden_states, output_weight
from winnow.distill.rollout import RolloutBatch, assemble_batch
from winnow.distill.tasks.base import Problem

__all__ = ["SupervisedTrainer", "reference_batch", "warmup_cosine"]

_WEIGHTS_FILE = "sft_state.pt"


def warmup_cosine(step: int, steps: int, warmup_steps: int, floor: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_steps``, then cosine decay from 1 to
    ``floor`` at ``steps`` (``step`` counts from 0)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def reference_batch(
    tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]
) -> RolloutBatch:
    """``problems`` with their reference answers (+ EOS) as responses, in the rollout layout."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    answers = tokenizer([p.answer for p in problems], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return assemble_batch(
        tokenizer,
        prompt_ids,
        prompt_mask,
        [[*answer, eos] for answer in answers],
        torch.arange(len(problems)),
        {eos},
    )


class SupervisedTrainer:
    """Teacher-forced training of ``model`` in place that can stop at any step and continue
    exactly from a checkpoint (``winnow distill sft --resume``).

    The loss is the mean cross-entropy over answer tokens and the final EOS (prompt tokens are
    context only). Problems are drawn uniformly with replacement by a generator seeded with
    ``seed``. AdamW; the learning rate follows :func:`warmup_cosine` over ``steps``
    (``warmup_steps`` defaults to 5% of ``steps``); gradients are clipped to norm 1.
    """

    is_main_process = True  # one process: it writes every checkpoint it saves

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        problems: Sequence[Problem],
        steps: int,
        batch_size: int,
        lr: float,
        seed: int,
        weight_decay: float = 0.0,
        warmup_steps: int | None = None,
    ) -> None:
        _check_arguments(problems, steps, batch_size, lr)
        self.model, self.tokenizer, self.problems = model, tokenizer, problems
        self.batch_size = batch_size
        warmup = max(1, steps // 20) if warmup_steps is None else warmup_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, steps, warmup)
        )
        self.step = 0
        self.history: list[dict[str, float]] = []

    def train(
        self, until: int, on_step: Callable[[dict[str, float]], None] | None = None
    ) -> list[dict[str, float]]:
        """Take optimizer steps until ``self.step == until``; ``on_step`` receives each step's
        metrics (``step`` 1-based, ``loss`` in nats per answer token, ``lr``). Returns the
        history of every step so far."""
        device, was_training = self.model.device, self.model.training
        self.model.train()
        while self.step < until:
            chosen = torch.randint(
                len(self.problems), (self.batch_size,), generator=self.generator
            ).tolist()
            batch = reference_batch(self.tokenizer, [self.problems[i] for i in chosen])
            loss = _answer_cross_entropy(self.model, batch.to(device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.step += 1
            row = {"step": self.step, "loss": loss.item(), "lr": self.schedule.get_last_lr()[0]}
            self.optimizer.step()
            self.schedule.step()
            self.history.append(row)
            if on_step is not None:
                on_step(row)
        self.model.train(was_training)
        return self.history

    def save_checkpoint(self, path: str | Path) -> Path:
        """Weights, optimizer, schedule and both random states in ``path``; the step and the
        history in ``trainer_state.json``, written last (a folder that has it is complete)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout, if the model has any
        }
        with atomic_path(path / _WEIGHTS_FILE) as tmp:
            torch.save(state, tmp)
        record = {"step": self.step, "history": self.history}
        atomic_write_text(path / STATE_FILE, json.dumps(record, indent=1) + "\n")
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a :meth:`save_checkpoint` folder; training then continues exactly."""
        path = Path(path)
        if not (path / STATE_FILE).is_file() or not (path / _WEIGHTS_FILE).is_file():
            raise DistillInputError(
                f"{path} is not a complete winnow SFT checkpoint (needs {STATE_FILE} and "
                f"{_WEIGHTS_FILE}); pass a run folder of winnow distill sft"
            )
        state = torch.load(path / _WEIGHTS_FILE, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        self.step, self.history = int(record["step"]), list(record["history"])


def _answer_cross_entropy(model: PreTrainedModel, batch: RolloutBatch) -> torch.Tensor:
    batch_idx, pos_idx = batch.loss_rows()
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask, batch.position_ids)
    logits = hidden[batch_idx, pos_idx] @ output_weight(model).T
    return F.cross_entropy(logits.float(), batch.input_ids[batch_idx, pos_idx + 1])


def _check_arguments(problems: Sequence[Problem], steps: int, batch_size: int, lr: float) -> None:
    checks = (
        ("problems", len(problems), len(problems) > 0, "a non-empty list of Problem"),
        ("steps", steps, steps >= 1, "an integer >= 1"),
        ("batch_size", batch_size, batch_size >= 1, "an integer >= 1"),
        ("lr", lr, lr > 0, "> 0"),
    )
    for name, value, valid, allowed in checks:
        if not valid:
            raise DistillInputError(f"{name} must be {allowed}, got {value!r}")
