"""The on-policy distillation loop: rollout -> teacher scoring -> token selection -> loss -> step.

One optimizer step reads top to bottom through named helpers. The student samples its own
responses; the teacher and the student each run their decoder once over those sequences; TIP
scores every response position chunk-wise without gradient and keeps a subset; the divergence
and the output projection then run at the kept rows only, so the [tokens x vocabulary] logits
are never held for backward.

Built on accelerate: on one process it is a plain loop; under
``accelerate launch --num_processes 2`` each process samples its own prompts and gradients are
averaged (DDP; gloo on CPU, tested). FSDP is untested and, as written, would not work: the
loss reads the output matrix outside the wrapped module's ``forward`` (docs/distill.md).

Randomness is a pure function of ``(seed, step, shard)``, so a run resumed from a checkpoint
re-draws exactly the prompts, rollouts and token selections it would have drawn, and a
data-parallel run draws the same shards as one process accumulating over them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from winnow.common.causal_lm import quiet_loading
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.distill.checkpoints import STATE_FILE
from winnow.distill.config import TrainConfig
from winnow.distill.evaluate import EvalResult, evaluate_greedy
from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import hidden_states, output_weight
from winnow.distill.objectives import grpo_loss, opd_loss, opsa_loss, sampled_log_probs
from winnow.distill.pacing import (
    pass_rates,
    problem_weights,
    skip_mask,
    teacher_calls_saved,
    weight_mass_by_bin,
)
from winnow.distill.rollout import RolloutBatch, build_backend, with_prompts
from winnow.distill.tasks import Task, load_reward
from winnow.distill.tasks.base import reward_of
from winnow.distill.token_metrics import selection_summary
from winnow.distill.tokens import SelectorConfig, TokenStats

__all__ = ["OnPolicyDistiller", "StudentBody", "make_accelerator", "step_seed"]

_TEACHER_FILE = "teacher.pt"


def step_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part, e.g. ``(seed, step, micro, process)``."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def make_accelerator(config: TrainConfig):
    """An ``accelerate.Accelerator`` for ``config``: precision, accumulation, device."""
    from accelerate import Accelerator

    # Without a GPU, cpu=True is what lets accelerate start gloo data parallelism under a launcher.
    cpu = config.cpu or not torch.cuda.is_available()
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=config.optim.accumulation_steps,
    )


class StudentBody(nn.Module):
    """The student's decoder as the module that DDP wraps: returns hidden states, no logits.

    The output projection runs outside, at the kept rows only; its weight stays a parameter of
    this module, so data-parallel wrappers still synchronise its gradient.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        return hidden_states(self.model, input_ids, attention_mask, position_ids)


class OnPolicyDistiller:
    """Trains ``student`` towards ``teacher`` on its own rollouts of ``task`` with one selector.

    Parameters
    ----------
    student, teacher : causal LMs sharing ``tokenizer`` (check with
        :func:`~winnow.distill.models.check_same_tokenizer` before).
    task : prompts plus a verifier.
    config : the run's :class:`~winnow.distill.config.TrainConfig`.
    selector : which response positions carry the loss (TIP).
    accelerator : an ``accelerate.Accelerator``; one is made from ``config`` when omitted.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        tokenizer,
        task: Task,
        config: TrainConfig,
        selector: SelectorConfig,
        accelerator=None,
    ):
        self.config, self.selector, self.task = config, selector, task
        self.accelerator = accelerator or make_accelerator(config)
        optimizer = torch.optim.AdamW(
            student.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.body, self.optimizer = self.accelerator.prepare(StudentBody(student), optimizer)
        self.student = self.accelerator.unwrap_model(self.body).model
        self.teacher = teacher.to(self.accelerator.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        rollout = config.rollout
        options = (
            {"gpu_memory_utilization": rollout.vllm_gpu_memory_utilization}
            if rollout.backend == "vllm"
            else {}
        )
        self.backend = build_backend(rollout.backend, self.student, tokenizer, **options)
        # Checkpoints of one family may pad their output matrices to different sizes.
        self.vocab_size = len(tokenizer)
        self.train_pool = task.problems("train", config.task.train_problems, seed=config.seed)
        # One fixed held-out set for every seed and arm, so their accuracies are comparable.
        self.test_pool = task.problems("test", config.task.test_problems, seed=0)
        self.teacher_hidden = partial(hidden_states, self.teacher)
        reward = config.grpo.reward if config.objective == "grpo" else None
        self.reward_function = None if reward is None else load_reward(reward, "grpo.reward")
        self.step = 0
        self.history: list[dict] = []
        self.snapshot: tuple[TokenStats, Tensor] | None = None

    # -- the loop ---------------------------------------------------------------------------------

    def train(self, steps: int, on_step: Callable[[dict], None] | None = None) -> list[dict]:
        """Run optimizer steps until ``self.step == steps``; return this call's metric rows.

        Evaluates at step 0 (when starting fresh), every ``config.eval.every`` steps and at
        ``config.steps``: a schedule of step numbers only, so stopping at a checkpoint and
        resuming logs the same rows. ``on_step`` receives every row as it is made.
        """
        rows = []
        if self.step == 0 and not self.history:
            rows.append(self._record({"step": 0, **self.evaluate().as_metrics()}, on_step))
        while self.step < steps:
            metrics = self.train_step()
            if self.step % self.config.eval.every == 0 or self.step == self.config.steps:
                metrics |= self.evaluate().as_metrics()
            rows.append(self._record(metrics, on_step))
        return rows

    def train_step(self) -> dict:
        """One rollout round: ``accumulation_steps`` rollout batches, then one optimizer step over
        them (``grpo.updates_per_batch`` steps for GRPO); returns the round's metrics."""
        self.body.train()
        micro_batches = range(self.config.optim.accumulation_steps)
        if self.config.objective == "grpo":
            rounds = [self._grpo_rollouts(micro) for micro in micro_batches]
            parts = [
                self._optimise(partial(self._grpo_step, *grpo_round))
                for _ in range(self.config.grpo.updates_per_batch)
                for grpo_round in rounds
            ]
        else:
            parts = [self._optimise(partial(self._micro_step, micro)) for micro in micro_batches]
        if hasattr(self.backend, "sync_weights"):  # a separate sampling engine (vLLM)
            self.backend.sync_weights()
        self.step += 1
        refresh, rate = self.config.teacher_refresh_every, self.config.teacher_update_rate
        if refresh and self.step % refresh == 0:  # OPSDC: the teacher is the recent student
            self.teacher.load_state_dict(self.student.state_dict())
        if rate is not None:  # OPSDC with an EMA teacher
            with torch.no_grad():
                for ours, theirs in zip(
                    self.teacher.parameters(), self.student.parameters(), strict=True
                ):
                    ours.lerp_(theirs, rate)
        return {"step": self.step, **self._mean_over_processes(parts)}

    def _optimise(self, micro_loss: Callable[[], tuple[Tensor, dict]]) -> dict:
        """Back-propagate one micro-batch's loss; the optimizer steps once gradients sync."""
        with self.accelerator.accumulate(self.body):
            loss, metrics = micro_loss()
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                metrics["grad_norm"] = float(
                    self.accelerator.clip_grad_norm_(
                        self.body.parameters(), self.config.optim.grad_clip
                    )
                )
            self.optimizer.step()
            self.optimizer.zero_grad()
        return metrics

    def evaluate(self) -> EvalResult:
        """Greedy accuracy of the current student on the held-out problems."""
        self.body.eval()
        return evaluate_greedy(
            self.backend,
            self.task,
            self.test_pool,
            max_new_tokens=self.config.eval.max_new_tokens,
            batch_size=self.config.eval.batch_size,
        )

    # -- one rollout batch ------------------------------------------------------------------------

    def _draw_rollouts(self, micro: int) -> tuple[tuple[int, int, int], list, RolloutBatch]:
        # A shard is one rollout batch of a step: 2 processes x 1 micro-batch draw the same
        # shards as 1 process x 2 micro-batches, so both runs take the same optimizer steps.
        shard = micro * self.accelerator.num_processes + self.accelerator.process_index
        seed = (self.config.seed, self.step, shard)
        problems = self._draw_problems(step_seed(*seed, 0))
        return seed, problems, self._rollout([p.prompt for p in problems], step_seed(*seed, 1))

    def _micro_step(self, micro: int) -> tuple[Tensor, dict]:
        seed, problems, batch = self._draw_rollouts(micro)
        rewards = self._rewards(problems, batch)
        metrics = {"train_reward": float(rewards.mean())}
        if self.config.objective == "opsa":
            return self._opsa_step(batch, metrics)
        weights = None
        if self.config.pacing is not None:
            batch, weights, paced = self._pace(batch, rewards)
            metrics |= paced
            if weights is None:  # every problem solved or failed by all its rollouts
                return self._idle_loss(), metrics
        generator = torch.Generator().manual_seed(step_seed(*seed, 2))
        divergence = self.config.divergence
        step = opd_loss(
            self.body,
            output_weight(self.student, self.vocab_size),
            self.teacher_hidden,
            output_weight(self.teacher, self.vocab_size),
            batch,
            self.selector,
            generator,
            divergence=self._divergence_args(divergence.kind_at(self.step)),
            selection_divergence=self._divergence_args(
                divergence.selection_kind or divergence.kind_at(self.step)
            ),
            reduction=divergence.reduction,
            sequence_weights=weights,
            teacher_batch=self._teacher_batch(batch, problems),
        )
        if self.snapshot is None:
            self.snapshot = (step.stats, step.kept.cpu())
        metrics |= {
            "loss": float(step.loss.detach()),
            "response_tokens": len(step.stats.entropy),
            **selection_summary(step.stats, step.kept.cpu(), step.per_token.detach().cpu()),
        }
        return step.loss, metrics

    def _opsa_step(self, batch: RolloutBatch, metrics: dict) -> tuple[Tensor, dict]:
        """The OPSA control: a fixed negative advantage on every sampled token, no teacher."""
        loss, per_token = opsa_loss(
            self.body,
            output_weight(self.student, self.vocab_size),
            batch,
            self.config.opsa_advantage,
            self.config.divergence.temperature,
            self.config.divergence.chunk_size,
            self.config.divergence.reduction,
        )
        return loss, metrics | {"loss": float(loss.detach()), "response_tokens": len(per_token)}

    def _grpo_rollouts(self, micro: int) -> tuple[RolloutBatch, Tensor, Tensor | None, dict]:
        """A GRPO rollout batch, its rewards, and (for more than one update) the sampling
        policy's log-probabilities, kept fixed through the batch's updates."""
        _, problems, batch = self._draw_rollouts(micro)
        rewards = self._rewards(problems, batch)
        old_log_probs = None
        if self.config.grpo.updates_per_batch > 1:
            old_log_probs = sampled_log_probs(
                self.body,
                output_weight(self.student, self.vocab_size),
                batch,
                self.config.divergence.temperature,
                self.config.divergence.chunk_size,
            )
        return batch, rewards, old_log_probs, {"train_reward": float(rewards.mean())}

    def _grpo_step(
        self, batch: RolloutBatch, rewards: Tensor, old_log_probs: Tensor | None, metrics: dict
    ) -> tuple[Tensor, dict]:
        """GRPO (+ ACE) on the batch; the teacher slot holds the frozen reference policy."""
        grpo = self.config.grpo
        step = grpo_loss(
            self.body,
            output_weight(self.student, self.vocab_size),
            self.teacher_hidden,
            output_weight(self.teacher, self.vocab_size),
            batch,
            rewards,
            old_log_probs,
            alpha_ace=grpo.alpha_ace,
            ace_form=grpo.ace_form,
            kl_beta=grpo.kl_beta,
            eps_low=grpo.eps_low,
            eps_high=grpo.eps_high,
            scale_by_std=grpo.scale_by_std,
            temperature=self.config.divergence.temperature,
            chunk_size=self.config.divergence.chunk_size,
            reduction=self.config.divergence.reduction,
        )
        wrong = step.kept_rollouts & (rewards.to(step.kept_rollouts.device) < 1)
        confidence = step.confidence[wrong]
        metrics = {
            **metrics,
            "loss": float(step.loss.detach()),
            "kept_rollouts": float(step.kept_rollouts.float().mean()),
            "response_tokens": len(step.per_token),
        }
        if len(step.ratio):
            metrics |= {
                "clip_fraction": float(step.clipped.float().mean()),
                "ratio_std": float(step.ratio.std(correction=0)),
                "ratio_max_deviation": float((step.ratio - 1).abs().max()),
            }
        if len(confidence) and not torch.isnan(confidence).any():
            metrics["wrong_confident_fraction"] = float((confidence > 0).float().mean())
        return step.loss, metrics

    def _teacher_batch(self, batch: RolloutBatch, problems: list) -> RolloutBatch | None:
        """OPSDC: the same responses after the instruction and the prompt; None otherwise."""
        instruction = self.config.teacher_instruction
        if instruction is None:
            return None
        prompts = [instruction + problems[int(i)].prompt for i in batch.problem_index]
        return with_prompts(batch, self.tokenizer, prompts)

    def _rewards(self, problems: list, batch: RolloutBatch) -> Tensor:
        """[B] float: the task's reward of each rollout in [0, 1], or ``grpo.reward``'s."""
        pairs = [
            (problems[int(i)], text)
            for i, text in zip(batch.problem_index, batch.responses, strict=True)
        ]
        if self.reward_function is None:
            return torch.tensor(
                [reward_of(self.task, *pair) for pair in pairs], dtype=torch.float64
            )
        rewards = [self.reward_function(p.prompt, text, p.answer) for p, text in pairs]
        try:
            values = torch.tensor(rewards, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            values = torch.full((len(rewards),), torch.nan, dtype=torch.float64)
        if not torch.isfinite(values).all():
            bad = rewards[int(torch.nonzero(~torch.isfinite(values))[0])]
            raise DistillInputError(
                f"grpo.reward {self.config.grpo.reward!r} returned {bad!r}; fix: return a finite "
                "float (1 = correct if ACE or pacing reads it)"
            )
        return values

    def _pace(self, batch: RolloutBatch, rewards: Tensor):
        """Paced: keep the rollouts of problems with weight > 0, with their weights [b].

        Returns ``(batch, weights, metrics)``; ``weights`` is None when no problem trains.
        """
        pacing = self.config.pacing
        index = batch.problem_index.cpu()
        problems, rate, count = pass_rates(rewards, index)
        weight = problem_weights(rate, pacing.alpha, pacing.beta, pacing.normalise)
        skip = skip_mask(weight)
        per_rollout = weight[torch.searchsorted(problems, index)]
        metrics = {
            "mean_pass_rate": float(rate.mean()),
            "teacher_rollouts_saved": teacher_calls_saved(skip, count),
            **weight_mass_by_bin(rate, weight),
        }
        keep = torch.nonzero(per_rollout > 0).flatten()
        if len(keep) == 0:
            return batch, None, metrics
        return batch.select(keep), per_rollout[keep], metrics

    def _idle_loss(self) -> Tensor:
        """A zero loss on every student parameter: data-parallel ranks must all back-propagate."""
        return sum(parameter.sum() for parameter in self.body.parameters()) * 0.0

    def _draw_problems(self, seed: int) -> list:
        rng = np.random.default_rng(seed)
        size = self.config.prompts_per_step
        replace = size > len(self.train_pool)
        return [self.train_pool[i] for i in rng.choice(len(self.train_pool), size, replace)]

    def _rollout(self, prompts: list[str], seed: int) -> RolloutBatch:
        self.student.eval()
        rollout = self.config.rollout
        batch = self.backend.sample(
            prompts,
            n=rollout.samples_per_prompt,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            max_new_tokens=rollout.max_new_tokens,
            seed=seed,
        )
        self.student.train()
        return batch.to(self.accelerator.device)

    def _divergence_args(self, kind: str) -> dict:
        divergence = self.config.divergence
        return {
            "kind": kind,
            "beta": divergence.beta,
            "temperature": divergence.temperature,
            "chunk_size": divergence.chunk_size,
        }

    def _mean_over_processes(self, parts: list[dict]) -> dict:
        """Average each metric over the micro-batches and processes that report it.

        A micro-batch that Paced skips entirely reports no loss, so key sets may differ; every
        rank receives every part and logs the same row.
        """
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object(parts)
        keys = dict.fromkeys(key for part in parts for key in part)
        return {key: float(np.mean([p[key] for p in parts if key in p])) for key in keys}

    def _record(self, row: dict, on_step: Callable[[dict], None] | None) -> dict:
        self.history.append(row)
        if on_step is not None:
            on_step(row)
        return row

    # -- checkpoints ------------------------------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        """Whether this process writes the files of a checkpoint (and deletes old ones)."""
        return self.accelerator.is_main_process

    def save_checkpoint(self, path: str | Path) -> Path:
        """Save weights, optimizer, RNG states, the step and the metric history to ``path``.

        ``trainer_state.json`` is written last: a folder that has it is a complete checkpoint.
        """
        import transformers

        path = Path(path)
        with quiet_loading(transformers):  # accelerate warns of the tied weights it drops
            self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            if self.config.teacher_refresh_every or self.config.teacher_update_rate:
                # a refreshed or averaged teacher is state too
                with atomic_path(path / _TEACHER_FILE) as tmp:
                    torch.save(self.teacher.state_dict(), tmp)
            state = {"step": self.step, "history": self.history}
            atomic_write_text(path / STATE_FILE, json.dumps(state, indent=1) + "\n")
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a :meth:`save_checkpoint` folder; training then continues exactly."""
        path = Path(path)
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise DistillInputError(
                f"{path} is not a winnow checkpoint (no {STATE_FILE}); pass a folder "
                "written by save_checkpoint, e.g. runs/<run>/checkpoints/<arm>/step-000100"
            )
        self.accelerator.load_state(str(path))
        if (path / _TEACHER_FILE).is_file():
            self.teacher.load_state_dict(torch.load(path / _TEACHER_FILE, weights_only=True))
        state = json.loads(state_file.read_text())
        self.step, self.history = int(state["step"]), list(state["history"])
