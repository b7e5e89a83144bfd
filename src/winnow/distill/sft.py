"""Supervised fine-tuning with teacher forcing: how the teacher and the starting student are made.

A distillation experiment needs a strong teacher and a weaker student of the same tokenizer; on
synthetic tasks both come from training on reference answers, the student for fewer steps. The
batch is laid out exactly like a rollout (the reference answer plus EOS stands where a sampled
response would), so the loss rows are the ones on-policy training later uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import encode_prompts, hidden_states, output_weight
from winnow.distill.rollout import RolloutBatch, assemble_batch
from winnow.distill.tasks.base import Problem

__all__ = ["reference_batch", "supervised_finetune", "warmup_cosine"]


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


def supervised_finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    warmup_steps: int | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``steps`` AdamW steps on ``batch_size`` problems each.

    The loss is the mean cross-entropy over answer tokens and the final EOS (prompt tokens are
    context only). Problems are drawn uniformly with replacement by a generator seeded with
    ``seed``. The learning rate follows :func:`warmup_cosine` (``warmup_steps`` defaults to 5% of
    ``steps``); gradients are clipped to norm 1. ``on_step`` receives each step's metrics.

    Returns one dict per step: ``step`` (1-based), ``loss`` (nats per answer token), ``lr``.
    """
    _check_arguments(problems, steps, batch_size, lr)
    warmup = max(1, steps // 20) if warmup_steps is None else warmup_steps
    generator = torch.Generator().manual_seed(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, steps, warmup)
    )
    device, was_training = model.device, model.training
    model.train()
    metrics = []
    for step in range(steps):
        chosen = torch.randint(len(problems), (batch_size,), generator=generator).tolist()
        batch = reference_batch(tokenizer, [problems[i] for i in chosen]).to(device)
        loss = _answer_cross_entropy(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        row = {"step": step + 1, "loss": loss.item(), "lr": schedule.get_last_lr()[0]}
        optimizer.step()
        schedule.step()
        metrics.append(row)
        if on_step is not None:
            on_step(row)
    model.train(was_training)
    return metrics


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
