"""End-to-end tests of the on-policy loop: learning, exact resume, data-parallel equivalence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.distill.config import TrainConfig
from winnow.distill.evaluate import evaluate_greedy
from winnow.distill.exceptions import DistillInputError
from winnow.distill.jobs import load_pair
from winnow.distill.models import TinyModelConfig, build_tiny_model, char_tokenizer, load_model
from winnow.distill.sft import SupervisedTrainer
from winnow.distill.tasks import AdditionTask
from winnow.distill.tokens import SelectorConfig
from winnow.distill.trainer import OnPolicyDistiller, step_seed

TASK = AdditionTask(digits=(1,))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A teacher that solves 1-digit addition and a barely trained student, saved to disk."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = char_tokenizer(TASK.alphabet)
    problems = TASK.problems("train", 100, seed=0)
    for role, width, steps in (("teacher", 32, 300), ("student", 32, 30)):
        config = TinyModelConfig(hidden_size=width, num_layers=2, num_heads=2, max_positions=16)
        model = build_tiny_model(config, tokenizer, seed=1)
        SupervisedTrainer(model, tokenizer, problems, steps, 32, 3e-3, seed=0).train(steps)
        model.save_pretrained(root / role)
        tokenizer.save_pretrained(root / role)
    return root


def train_config(model_dir: Path, **overrides) -> TrainConfig:
    data = {
        "student": {"path": str(model_dir / "student")},
        "teacher": {"path": str(model_dir / "teacher")},
        "task": {"digits": [1], "train_problems": 100, "test_problems": 64},
        "rollout": {"max_new_tokens": 3},
        "eval": {"every": 5, "max_new_tokens": 3},
        "optim": {"lr": 3e-3},
        "prompts_per_step": 16,
        "steps": 4,
        "cpu": True,
    }
    for key, value in overrides.items():
        data[key] = value
    return load_config(TrainConfig, data)


def distiller(config: TrainConfig, selector: SelectorConfig | None = None) -> OnPolicyDistiller:
    student, teacher, tokenizer = load_pair(config)
    return OnPolicyDistiller(
        student, teacher, tokenizer, TASK, config, selector or SelectorConfig()
    )


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_step_seed_depends_on_every_part():
    seeds = {step_seed(0, s, k) for s in range(5) for k in range(5)}
    assert len(seeds) == 25
    assert step_seed(1, 2, 3) == step_seed(1, 2, 3)


def test_distillation_raises_accuracy(model_dir):
    """The weak student gets closer to the teacher: greedy accuracy on the training prompts
    goes up. (1-digit addition has too few pairs for a tiny teacher to generalise to the
    held-out split, so the teacher's skill, and the student's gain, are on the train split.)"""
    config = train_config(model_dir, steps=120, eval={"every": 120, "max_new_tokens": 3})
    trainer = distiller(config, SelectorConfig(name="entropy_sample", p=0.5))
    seen = trainer.train_pool[:64]
    before = evaluate_greedy(trainer.backend, TASK, seen, max_new_tokens=3).accuracy
    rows = trainer.train(config.steps)
    after = evaluate_greedy(trainer.backend, TASK, seen, max_new_tokens=3).accuracy
    assert after > before + 0.2
    kept = [row["kept_fraction"] for row in rows if "kept_fraction" in row]
    assert kept and all(0.4 < k < 0.6 for k in kept)


def test_only_kept_rows_are_trained_on(model_dir):
    """A step with a selector logs exactly the kept fraction, and the loss mass sums to 1."""
    selector = SelectorConfig(name="quadrants", keep_quadrants=[3])
    trainer = distiller(train_config(model_dir), selector)
    row = trainer.train_step()
    assert row["kept_fraction"] == pytest.approx(row["quadrant_fraction_q3"], abs=1e-9)
    mass = sum(row[f"loss_mass_q{q}"] for q in range(1, 5))
    assert mass == pytest.approx(1.0)
    assert row["loss_mass_q3"] == pytest.approx(1.0)


def test_resume_gives_the_same_metrics_and_weights(model_dir, tmp_path):
    config = train_config(model_dir, steps=4)
    straight = distiller(config)
    straight.train(4)

    first = distiller(config)
    first.train(2)
    checkpoint = first.save_checkpoint(tmp_path / "step-2")
    del first
    resumed = distiller(config)
    resumed.load_checkpoint(checkpoint)
    resumed.train(4)

    assert resumed.history == straight.history
    for name, value in parameters(straight.student).items():
        torch.testing.assert_close(parameters(resumed.student)[name], value, rtol=0, atol=0)


def test_load_checkpoint_refuses_a_plain_folder(model_dir, tmp_path):
    with pytest.raises(DistillInputError, match="not a winnow checkpoint"):
        distiller(train_config(model_dir)).load_checkpoint(tmp_path)


def test_two_processes_equal_one_process_accumulating(model_dir, tmp_path):
    """``accelerate launch --num_processes 2`` (DDP over gloo) takes the same steps as one
    process accumulating gradients over the same two rollout shards."""
    overrides = [
        f"student.path={model_dir / 'student'}",
        f"teacher.path={model_dir / 'teacher'}",
        "task.digits=[1]",
        "task.train_problems=100",
        "task.test_problems=32",
        "rollout.max_new_tokens=3",
        "eval.max_new_tokens=3",
        "prompts_per_step=8",
        "steps=3",
        "cpu=true",
    ]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    # --multi_gpu picks torch's launcher; without CUDA winnow starts gloo data parallelism.
    command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no"]
    command += ["-m", "winnow", "distill", "train", "--quiet", "--out", str(tmp_path / "ddp")]
    command += [item for o in overrides for item in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "ddp").iterdir()
    assert (run / "report.html").is_file()
    parallel, _ = load_model(run / "students" / "all")

    config = load_config(TrainConfig, overrides=[*overrides, "optim.accumulation_steps=2"])
    single = distiller(config)
    single.train(3)
    for name, value in parameters(single.student).items():
        torch.testing.assert_close(parameters(parallel)[name], value, rtol=1e-4, atol=1e-5)


def test_paced_skips_solved_and_failed_problems_before_the_teacher(model_dir):
    """Only rollouts of problems with 0 < pass rate < 1 reach the teacher, weighted by w(p)."""
    config = train_config(
        model_dir, pacing={"alpha": 1.0, "beta": 1.0}, rollout={"samples_per_prompt": 4}
    )
    trainer = distiller(config)
    seen, drawn = [], []
    teacher_hidden, rewards_of = trainer.teacher_hidden, trainer._rewards

    def spy_teacher(input_ids, attention_mask, position_ids):
        seen.append(input_ids.clone())
        return teacher_hidden(input_ids, attention_mask, position_ids)

    def spy_rewards(problems, batch):
        rewards = rewards_of(problems, batch)
        drawn.append((batch, rewards))
        return rewards

    trainer.teacher_hidden, trainer._rewards = spy_teacher, spy_rewards
    row = trainer.train_step()
    ((batch, rewards),), (teacher_input,) = drawn, seen
    rate = {int(p): float(rewards[batch.problem_index == p].mean()) for p in batch.problem_index}
    expected = [b for b, p in enumerate(batch.problem_index.tolist()) if 0 < rate[p] < 1]
    assert 0 < len(expected) < len(batch.problem_index)  # this seed has both kinds
    torch.testing.assert_close(teacher_input, batch.input_ids[expected])
    skipped = 1 - len(expected) / len(batch.problem_index)
    assert row["teacher_rollouts_saved"] == pytest.approx(skipped)


def test_paced_step_with_nothing_to_learn_leaves_the_teacher_alone(model_dir):
    """With alpha = 1 a batch whose problems all fail has weight 0 everywhere: no teacher call."""
    config = train_config(
        model_dir, pacing={"alpha": 1.0, "beta": 1.0}, rollout={"samples_per_prompt": 2}
    )
    trainer = distiller(config)
    trainer._rewards = lambda problems, batch: torch.zeros(len(batch.responses))
    trainer.teacher_hidden = lambda *args: pytest.fail("the teacher was called")
    row = trainer.train_step()
    assert row["teacher_rollouts_saved"] == 1.0 and "loss" not in row


def test_grpo_objective_trains_the_policy_and_leaves_the_reference(model_dir):
    """objective grpo: rewards from the verifier, the teacher slot as the frozen reference
    (run only for ACE), and the fraction of confidently wrong rollouts logged."""
    config = train_config(
        model_dir,
        objective="grpo",
        grpo={"alpha_ace": 1.0},
        rollout={"samples_per_prompt": 4, "max_new_tokens": 3},
        teacher={"path": str(model_dir / "student")},
    )
    trainer = distiller(config)
    before = parameters(trainer.student)
    reference = parameters(trainer.teacher)
    rows = [trainer.train_step() for _ in range(3)]
    assert any(0 < row["kept_rollouts"] < 1 for row in rows)
    assert any("wrong_confident_fraction" in row for row in rows)
    changed = any(
        not torch.equal(value, parameters(trainer.student)[name]) for name, value in before.items()
    )
    assert changed
    for name, value in parameters(trainer.teacher).items():
        assert torch.equal(value, reference[name])


def test_grpo_with_two_updates_per_batch_moves_the_ratio_and_clips(model_dir):
    config = train_config(
        model_dir,
        objective="grpo",
        grpo={"updates_per_batch": 2, "eps_low": 0.01, "eps_high": 0.01},
        rollout={"samples_per_prompt": 4, "max_new_tokens": 3},
        optim={"lr": 3e-2},
        teacher={"path": str(model_dir / "student")},
    )
    trainer = distiller(config)
    steps = {}
    original = trainer.optimizer.step

    def counting_step(*args, **kwargs):
        steps["n"] = steps.get("n", 0) + 1
        return original(*args, **kwargs)

    trainer.optimizer.step = counting_step
    rows = [trainer.train_step() for _ in range(3)]
    assert steps["n"] == 6  # two updates on each rollout batch
    trained = [row for row in rows if "clip_fraction" in row]  # a batch with mixed rewards
    assert trained and all(row["ratio_max_deviation"] > 0 for row in trained)
    assert any(row["clip_fraction"] > 0 for row in trained)
    single = distiller(train_config(
        model_dir, objective="grpo", rollout={"samples_per_prompt": 4, "max_new_tokens": 3},
        teacher={"path": str(model_dir / "student")},
    )).train_step()  # fmt: skip
    assert single["ratio_max_deviation"] == 0 and single["clip_fraction"] == 0


@pytest.mark.parametrize(
    ("rollout", "divergence"),
    [({"temperature": 0.7}, {"temperature": 1.0}), ({"top_p": 0.9}, {})],
)
def test_grpo_refuses_scoring_unlike_sampling(model_dir, rollout, divergence):
    with pytest.raises(ConfigError, match="no importance correction"):
        train_config(
            model_dir,
            objective="grpo",
            rollout={"samples_per_prompt": 2, **rollout},
            divergence=divergence,
        )


def test_grpo_rejects_token_selectors(model_dir):
    with pytest.raises(ConfigError, match="token selectors and pacing apply to objective 'opd'"):
        train_config(
            model_dir,
            objective="grpo",
            rollout={"samples_per_prompt": 2},
            arms={"half": {"name": "random", "p": 0.5}},
        )


def opsdc_config(model_dir: Path, **overrides) -> TrainConfig:
    """Self-distillation: the teacher starts as the student and reads an instruction first."""
    settings = {
        "teacher": {"path": str(model_dir / "student")},
        "teacher_instruction": "0+0=",  # the char tokenizer spells only digits, '+' and '='
        "teacher_refresh_every": 2,
        "divergence": {"kind": "reverse_kl"},
    }
    return train_config(model_dir, **(settings | overrides))


def test_teacher_is_refreshed_from_the_student_every_m_steps(model_dir):
    trainer = distiller(opsdc_config(model_dir))
    start = parameters(trainer.teacher)
    trainer.train_step()  # step 1: the teacher is still the starting student
    assert all(torch.equal(v, parameters(trainer.teacher)[k]) for k, v in start.items())
    trainer.train_step()  # step 2: refreshed, equal to the student now
    student = parameters(trainer.student)
    assert all(torch.equal(v, student[k]) for k, v in parameters(trainer.teacher).items())
    trainer.train_step()  # step 3: the student moved on
    student = parameters(trainer.student)
    assert any(not torch.equal(v, student[k]) for k, v in parameters(trainer.teacher).items())


def test_resume_restores_a_refreshed_teacher(model_dir, tmp_path):
    config = opsdc_config(model_dir, steps=5)
    straight = distiller(config)
    straight.train(5)
    first = distiller(config)
    first.train(3)
    checkpoint = first.save_checkpoint(tmp_path / "step-3")
    resumed = distiller(config)
    resumed.load_checkpoint(checkpoint)
    resumed.train(5)
    assert resumed.history == straight.history
    for name, value in parameters(straight.teacher).items():
        assert torch.equal(parameters(resumed.teacher)[name], value)


def test_an_ema_teacher_moves_towards_the_student_by_the_rate(model_dir):
    trainer = distiller(
        opsdc_config(model_dir, teacher_refresh_every=None, teacher_update_rate=0.25)
    )
    start = parameters(trainer.teacher)
    trainer.train_step()
    student = parameters(trainer.student)
    for name, value in parameters(trainer.teacher).items():
        torch.testing.assert_close(value, start[name] + 0.25 * (student[name] - start[name]))
    with pytest.raises(ConfigError, match="set one of them to null"):
        opsdc_config(model_dir, teacher_update_rate=0.25)  # refresh_every=2 is set too


def test_the_opsa_control_trains_without_the_teacher(model_dir):
    config = train_config(model_dir, objective="opsa")
    trainer = distiller(config)
    calls = []
    trainer.teacher_hidden = lambda *args: calls.append(args)
    before = parameters(trainer.student)
    row = trainer.train_step()
    assert not calls and row["loss"] < 0  # |A| * mean log-probability
    assert any(not torch.equal(v, parameters(trainer.student)[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="opsa control trains every sampled token"):
        train_config(model_dir, objective="opsa", arms={"half": {"name": "random", "p": 0.5}})
