"""Typed configs of the distill jobs: every default in one place, saved with every run.

``TrainConfig`` drives ``winnow distill train`` (on-policy distillation, one run per selector arm);
``SftConfig`` drives ``winnow distill sft`` (a competent teacher and a weak student for CPU runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from winnow.common.config import Config
from winnow.distill.divergence import DivergenceKind
from winnow.distill.models import TinyModelConfig, load_model
from winnow.distill.pacing import KLSchedule
from winnow.distill.tasks.jsonl import VERIFIERS
from winnow.distill.tasks.registry import TASKS, is_import_path
from winnow.distill.tokens import SelectorConfig

__all__ = [
    "Checkpointing",
    "DivergenceConfig",
    "EvalConfig",
    "EvalJobConfig",
    "GrpoConfig",
    "ModelRef",
    "OptimConfig",
    "PacingConfig",
    "RolloutConfig",
    "SftConfig",
    "SftModelConfig",
    "TaskConfig",
    "TrainConfig",
]


class ModelRef(Config):
    """A causal LM by hub id, local folder (``save_pretrained`` layout, tokenizer included), or
    a GGUF file in either, or the bundled SmolLM2-135M-Instruct."""

    path: str = Field(
        description="hub id (e.g. Qwen/Qwen3-0.6B), a local folder, or 'bundled:smollm2'"
    )
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    gguf_file: str | None = Field(None, description="a GGUF file inside the folder or hub repo")

    def load(self, device: str = "cpu"):
        """``(model, tokenizer)`` (:func:`~winnow.distill.models.load_model`)."""
        return load_model(self.path, self.dtype, device, self.gguf_file)


class TaskConfig(Config):
    """The verifiable task: a registered one (synthetic addition on CPU, math answers from
    JSONL), your own class by import path, or your JSONL file with a verifier (``kind: jsonl``).
    """

    kind: Literal["named", "jsonl"] = Field(
        "named",
        description="named: task.name; jsonl: problems of task.path checked by task.verifier",
    )
    name: str = Field(
        "addition",
        description="a registered task (addition, math_answers, verbose_addition) or your task "
        "class as 'package.module:Class' or 'path/to/file.py:Class'",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of your task class (import-path names only)",
    )
    digits: list[int] = Field(
        default_factory=lambda: [3],
        min_length=1,
        description="addition: operand digit counts in the pool (difficulty buckets)",
    )
    path: str | None = Field(None, description="math_answers and jsonl: the JSONL file of problems")
    prompt_field: str = Field("prompt", description="jsonl: the field holding the prompt")
    answer_field: str = Field("answer", description="jsonl: the field holding the reference")
    verifier: str = Field(
        "exact",
        description="jsonl: exact, numeric, math_verify, regex (with task.pattern), or your "
        "function 'package.module:function' called as f(prompt, response, reference)",
    )
    pattern: str | None = Field(None, description="jsonl, verifier regex: the expression")
    carry: bool = Field(True, description="addition: False drops every carry from the answers")
    reverse_answer: bool = Field(
        True, description="addition: answers least-significant digit first (tiny models learn it)"
    )
    chat: bool | None = Field(
        None,
        description="send each prompt as a user message through the tokenizer's chat template "
        "(instruct models); null = yes for jsonl tasks whose tokenizer has one, else no",
    )
    pad_operands: bool = Field(
        False,
        description="addition: zero-pad operands to max(digits) digits, one prompt layout for "
        "every digit count (what lets a tiny model learn a mixed pool)",
    )
    instruction: str | None = Field(
        None,
        description="verbose_addition: the text a concise prompt starts with; None = the OPSDC "
        "paper's instruction",
    )
    train_problems: int = Field(4000, ge=1, description="size of the training prompt pool")
    test_problems: int = Field(256, ge=1, description="held-out problems for evaluation")

    @model_validator(mode="after")
    def _math_needs_a_file(self):
        if (self.name == "math_answers" or self.kind == "jsonl") and not self.path:
            raise ValueError(f"task {self.label!r} reads problems from a JSONL file; set task.path")
        return self

    @model_validator(mode="after")
    def _known_name_and_params(self):
        own = is_import_path(self.name)
        if self.kind == "named" and not own and self.name not in TASKS:
            raise ValueError(
                f"task.name {self.name!r} is neither a registered task ({', '.join(TASKS)}) nor "
                "an import path; fix: pick a registered task, or name your task class as "
                "'package.module:Class' or 'path/to/file.py:Class'"
            )
        if self.params and (self.kind == "jsonl" or not own):
            raise ValueError(
                "task.params go to your own task class (task.name 'module:Class'); for the "
                "registered tasks and jsonl set the task.* fields instead"
            )
        if self.kind == "jsonl" and not (
            self.verifier in VERIFIERS or is_import_path(self.verifier)
        ):
            raise ValueError(
                f"task.verifier {self.verifier!r} is not one of {', '.join(VERIFIERS)}; fix: pick "
                "one of those, or name your function as 'package.module:function'"
            )
        return self

    @property
    def label(self) -> str:
        """The task as reports name it."""
        return f"jsonl {Path(self.path).name}" if self.kind == "jsonl" and self.path else self.name

    def build_kwargs(self) -> dict:
        """Keyword arguments for :func:`winnow.distill.tasks.build_task` (named tasks)."""
        if is_import_path(self.name):
            return dict(self.params)
        if self.name == "math_answers":
            return {"path": self.path}
        if self.name == "verbose_addition":
            instruction = {} if self.instruction is None else {"instruction": self.instruction}
            return {"digits": tuple(self.digits), **instruction}
        return {
            "digits": tuple(self.digits),
            "carry": self.carry,
            "reverse_answer": self.reverse_answer,
            "pad_operands": self.pad_operands,
        }


class RolloutConfig(Config):
    """How the student samples its own responses."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="vllm is EXPERIMENTAL: never run by this project"
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, lt=1, description="vllm: share of the GPU's memory its engine may take"
    )
    samples_per_prompt: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(8, ge=1)


class DivergenceConfig(Config):
    """The per-token divergence trained on, and the one TIP scores positions with."""

    kind: DivergenceKind = "forward_kl"
    beta: float = Field(0.5, ge=0, le=1, description="jsd mixture weight (TRL's convention)")
    temperature: float = Field(1.0, gt=0)
    selection_kind: DivergenceKind | None = Field(
        None, description="divergence used to score positions for TIP; default: same as kind"
    )
    chunk_size: int = Field(1024, ge=1, description="rows per vocabulary-sized logits chunk")
    reduction: Literal["token", "sequence"] = Field(
        "token", description="average over kept tokens, or within each rollout first"
    )
    schedule: KLSchedule | None = Field(
        None, description="kind by step, e.g. {phases: [[forward_kl, 100], [reverse_kl, null]]}"
    )

    def kind_at(self, step: int) -> DivergenceKind:
        """The training divergence at optimizer step ``step`` (the schedule's, else ``kind``)."""
        return self.schedule.kind_at(step) if self.schedule else self.kind


class GrpoConfig(Config):
    """GRPO with DAPO's clip-higher and dynamic sampling, optional k3 KL, and ACE.

    With ``objective: grpo`` the ``teacher`` model is the frozen reference policy (usually the
    student's own starting checkpoint); it is only run when ``alpha_ace > 0`` or ``kl_beta > 0``.
    """

    alpha_ace: float = Field(0.0, ge=0, description="ACE strength; 0 = plain GRPO")
    ace_form: Literal["multiplicative", "additive"] = "multiplicative"
    kl_beta: float = Field(0.0, ge=0, description="k3 KL to the reference (TRL's default 0)")
    eps_low: float = Field(0.2, gt=0, lt=1)
    eps_high: float = Field(0.28, gt=0, description="DAPO clip-higher")
    scale_by_std: bool = Field(True, description="False = Dr.GRPO advantages")
    updates_per_batch: int = Field(
        1,
        ge=1,
        description="optimizer updates on each rollout batch (TRL's num_iterations); from the "
        "second on, the ratio to the sampling policy moves and the clip acts",
    )
    reward: str | None = Field(
        None,
        description="your reward function 'package.module:function' or 'path/to/file.py:"
        "function', called as f(prompt, response, reference) -> float; null = the task's "
        "verifier (ACE and pacing read 1 as correct)",
    )

    @model_validator(mode="after")
    def _reward_is_an_import_path(self):
        if self.reward is not None and ":" not in self.reward:
            raise ValueError(
                f"grpo.reward {self.reward!r} is not an import path; fix: write it as "
                "'package.module:function' or 'path/to/file.py:function'"
            )
        return self


class PacingConfig(Config):
    """Paced: weight each problem by w(p) = p^alpha (1 - p)^beta of its rollouts' pass rate p.

    Problems of weight 0 (p = 0 or 1) are dropped before the teacher is called. Needs
    ``rollout.samples_per_prompt >= 2`` so that p is more than one coin flip.
    """

    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    normalise: Literal["mean", "sum", "none"] = Field(
        "mean", description="mean: weights average 1 over the problems that train"
    )


class OptimConfig(Config):
    """AdamW with gradient clipping and accumulation."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    accumulation_steps: int = Field(1, ge=1, description="rollout batches per optimizer step")


class EvalConfig(Config):
    """Greedy evaluation on held-out problems."""

    every: int = Field(50, ge=1, description="optimizer steps between evaluations")
    max_new_tokens: int = Field(8, ge=1)
    batch_size: int = Field(256, ge=1)


class Checkpointing(Config):
    """Checkpoints of a long training, on by default, and the run it continues.

    Every 50 steps and at the end, so a stopped run loses at most 50 steps (``--resume RUN_DIR``).
    That is cheap on the shipped configs: an arithmetic model saves in about 20 ms on CPU
    (1.6 MB with its optimizer state); a SmolLM2 checkpoint is about 1.3 GB and takes seconds,
    and only the newest one is kept by default, so the disk holds one per arm.
    """

    checkpoint_every: int = Field(
        50, ge=0, description="steps between checkpoints (and one at the end); 0 = only the end"
    )
    keep_checkpoints: int | None = Field(
        1,
        ge=1,
        description="newest complete checkpoints kept per arm (older ones are deleted once a "
        "newer one is complete); null = keep all",
    )
    resume_from: str | None = Field(
        None,
        description="a run folder (each arm continues from its latest checkpoint there: "
        "--resume) or, for distill train, one checkpoint folder <run>/checkpoints/<arm>/step-N "
        "(one arm only)",
    )


class TrainConfig(Checkpointing):
    """``winnow distill train``: on-policy distillation, one training run per selector arm,
    checkpointed as :class:`Checkpointing` says."""

    seed: int = 0
    student: ModelRef = ModelRef(path="models/arith/student")
    teacher: ModelRef = ModelRef(path="models/arith/teacher")
    task: TaskConfig = TaskConfig()
    rollout: RolloutConfig = RolloutConfig()
    divergence: DivergenceConfig = DivergenceConfig()
    arms: dict[str, SelectorConfig] = Field(
        default_factory=lambda: {"all": SelectorConfig()},
        min_length=1,
        description="named token selectors; each arm trains a fresh copy of the student",
    )
    objective: Literal["opd", "grpo", "opsa"] = Field(
        "opd",
        description="opd: distil from the teacher; grpo: RL on the task's verifier; opsa: the "
        "OPSA control, a fixed negative advantage on every sampled token (no teacher)",
    )
    opsa_advantage: float = Field(
        -1.0, lt=0, description="opsa: the advantage given to every sampled token"
    )
    grpo: GrpoConfig = GrpoConfig()
    pacing: PacingConfig | None = Field(None, description="Paced problem weights; None = uniform")
    teacher_instruction: str | None = Field(
        None,
        description="OPSDC: text put before each prompt for the teacher only (the student sees "
        "the plain prompt)",
    )
    teacher_refresh_every: int | None = Field(
        None, ge=1, description="OPSDC: copy the student into the teacher every M steps"
    )
    teacher_update_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="OPSDC with an EMA teacher: after every step teacher += rate * (student - "
        "teacher); 1 = the student itself",
    )
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    steps: int = Field(200, ge=1, description="optimizer steps per arm")
    prompts_per_step: int = Field(64, ge=1, description="prompts per rollout batch (per process)")
    mixed_precision: Literal["auto", "no", "bf16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, else float32"
    )
    cpu: bool = Field(False, description="force CPU even when a GPU is present")

    @model_validator(mode="after")
    def _one_teacher_update(self):
        if self.teacher_refresh_every is not None and self.teacher_update_rate is not None:
            raise ValueError(
                "teacher_refresh_every (hard copies) and teacher_update_rate (EMA) both update "
                "the teacher; set one of them to null"
            )
        return self

    @model_validator(mode="after")
    def _opsa_trains_every_token(self):
        selective = [arm for arm, selector in self.arms.items() if selector.name != "all"]
        if self.objective == "opsa" and (selective or self.pacing is not None):
            raise ValueError(
                "the opsa control trains every sampled token; use arms with name 'all' and "
                f"pacing null (got selective arms {selective})"
            )
        return self

    @model_validator(mode="after")
    def _grpo_needs_groups_and_all_tokens(self):
        if self.objective != "grpo":
            return self
        if self.rollout.samples_per_prompt < 2:
            raise ValueError(
                "grpo compares the rollouts of each prompt; set rollout.samples_per_prompt >= 2"
            )
        sampling, scoring = self.rollout.temperature, self.divergence.temperature
        if sampling != scoring or self.rollout.top_p != 1.0:
            raise ValueError(
                f"grpo's ratio compares the policy with the one that sampled, but rollouts are "
                f"sampled at rollout.temperature={sampling}, rollout.top_p={self.rollout.top_p} "
                f"and scored at divergence.temperature={scoring}; set both temperatures to the "
                "same value and rollout.top_p to 1.0 (winnow applies no importance correction)"
            )
        selective = [arm for arm, selector in self.arms.items() if selector.name != "all"]
        if selective or self.pacing is not None:
            raise ValueError(
                "token selectors and pacing apply to objective 'opd'; for 'grpo' use arms "
                f"with name 'all' and pacing null (got selective arms {selective})"
            )
        return self

    @model_validator(mode="after")
    def _pacing_needs_groups(self):
        if self.pacing is not None and self.rollout.samples_per_prompt < 2:
            raise ValueError(
                "pacing estimates each problem's pass rate from its rollouts; set "
                "rollout.samples_per_prompt >= 2 (e.g. 4)"
            )
        return self

    @model_validator(mode="after")
    def _resume_is_one_arm(self):
        run_folder = self.resume_from and (Path(self.resume_from) / "run.json").is_file()
        if self.resume_from and not run_folder and len(self.arms) != 1:
            raise ValueError(
                "a checkpoint in resume_from continues one arm; keep only that arm in arms, or "
                f"pass the run folder to continue every arm (got {len(self.arms)}: "
                f"{', '.join(self.arms)})"
            )
        return self


class SftModelConfig(Config):
    """One model trained by ``winnow distill sft``: its architecture and training budget."""

    architecture: TinyModelConfig = TinyModelConfig()
    drop_carry: float = Field(
        0.0,
        ge=0,
        le=1,
        description="addition only: share of training answers with every carry dropped; true "
        "or 1 = all (a systematic, confident error), e.g. 0.75 = a student that usually drops "
        "carries but sometimes keeps them (mixed GRPO groups, for ACE)",
    )
    init_from: str | None = Field(
        None,
        description="fine-tune this saved model (same tokenizer) instead of a fresh one of "
        "'architecture', e.g. a correct teacher taught to drop carries",
    )
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)


class SftConfig(Checkpointing):
    """``winnow distill sft``: a competent teacher and a weaker student on the same tokenizer,
    each checkpointed as :class:`Checkpointing` says."""

    seed: int = 0
    task: TaskConfig = TaskConfig()
    output_dir: str = Field(
        "models/arith", description="teacher/ and student/ are saved here (save_pretrained)"
    )
    teacher: SftModelConfig | None = Field(
        SftModelConfig(
            architecture=TinyModelConfig(hidden_size=128, num_layers=3, num_heads=4), steps=3000
        ),
        description="null = train the student only (e.g. another student for an existing teacher)",
    )
    student: SftModelConfig | None = Field(
        SftModelConfig(
            architecture=TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4), steps=2000
        ),
        description="null = train the teacher only (e.g. OPSDC's single base model)",
    )
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _dropped_carries_need_addition(self):
        dropping = [
            role
            for role in ("teacher", "student")
            if getattr(self, role) is not None and getattr(self, role).drop_carry
        ]
        if dropping and self.task.name != "addition":
            raise ValueError(
                f"drop_carry ({', '.join(dropping)}) applies to task 'addition', not "
                f"{self.task.name!r}; set it to false"
            )
        return self

    @model_validator(mode="after")
    def _resume_is_a_run(self):
        if self.resume_from and not (Path(self.resume_from) / "run.json").is_file():
            raise ValueError(
                f"{self.resume_from} is not a run folder (no run.json); pass the folder of the "
                "winnow distill sft run to continue, e.g. runs/distill-sft-<timestamp>"
            )
        return self


class EvalJobConfig(Config):
    """``winnow distill eval``: greedy accuracy of one model on held-out problems."""

    model: ModelRef = ModelRef(path="models/arith/student")
    task: TaskConfig = TaskConfig()
    eval: EvalConfig = EvalConfig()
