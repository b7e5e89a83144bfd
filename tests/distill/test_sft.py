"""Tests of winnow.distill.sft: the reference batch, the schedule, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import TinyModelConfig, build_tiny_model, char_tokenizer
from winnow.distill.rollout import TransformersBackend
from winnow.distill.sft import SupervisedTrainer, reference_batch, warmup_cosine
from winnow.distill.tasks import AdditionTask, Problem

TASK = AdditionTask(digits=(1,))


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer(TASK.alphabet)


def tiny_model(tokenizer, layers=2):
    config = TinyModelConfig(hidden_size=32, num_layers=layers, num_heads=2, max_positions=16)
    return build_tiny_model(config, tokenizer, seed=0)


def greedy_accuracy(model, tokenizer, problems):
    batch = TransformersBackend(model, tokenizer).sample(
        [p.prompt for p in problems], temperature=0.0, max_new_tokens=3
    )
    return sum(TASK.verify(p, r) for p, r in zip(problems, batch.responses, strict=True)) / len(
        problems
    )


def test_reference_batch_predicts_answer_then_eos(tokenizer):
    problems = [Problem("1+2=", "3", 1), Problem("12+34=", "64", 2)]
    batch = reference_batch(tokenizer, problems)
    batch_idx, pos_idx = batch.loss_rows()
    targets = batch.input_ids[batch_idx, pos_idx + 1]
    eos = tokenizer.eos_token_id
    assert targets[batch_idx == 0].tolist() == [*tokenizer.convert_tokens_to_ids(["3"]), eos]
    assert targets[batch_idx == 1].tolist() == [*tokenizer.convert_tokens_to_ids(["6", "4"]), eos]
    assert batch.responses == ["3", "64"]


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.1)


def test_training_is_reproducible(tokenizer):
    problems = TASK.problems("train", 50, seed=0)
    runs = []
    for _ in range(2):
        model = tiny_model(tokenizer, layers=1)
        runs.append(
            SupervisedTrainer(model, tokenizer, problems, 3, 8, 1e-3, seed=0, warmup_steps=2).train(
                3
            )
        )
    assert runs[0] == runs[1]
    assert [row["step"] for row in runs[0]] == [1, 2, 3]
    assert runs[0][0]["lr"] < runs[0][1]["lr"]  # warm-up


@pytest.mark.parametrize(
    ("argument", "value"), [("problems", []), ("steps", 0), ("batch_size", 0), ("lr", 0.0)]
)
def test_arguments_are_validated(tokenizer, argument, value):
    kwargs = {"problems": TASK.problems("train", 4, 0), "steps": 1, "batch_size": 2, "lr": 1e-3}
    with pytest.raises(DistillInputError, match=f"{argument} must be"):
        SupervisedTrainer(
            tiny_model(tokenizer, 1), tokenizer, seed=0, **{**kwargs, argument: value}
        )


def test_sft_learns_one_digit_addition(tokenizer):
    """A 2-layer d=32 model fits the training pairs of 1-digit addition in 300 steps (~2 s)."""
    model = tiny_model(tokenizer)
    train = TASK.problems("train", 500, seed=0)
    fresh_draw = TASK.problems("train", 200, seed=1)
    before = greedy_accuracy(model, tokenizer, fresh_draw)
    seen = []
    trainer = SupervisedTrainer(model, tokenizer, train, steps=300, batch_size=32, lr=3e-3, seed=0)
    metrics = trainer.train(300, on_step=seen.append)
    after = greedy_accuracy(model, tokenizer, fresh_draw)
    assert seen == metrics and len(metrics) == 300
    assert metrics[-1]["loss"] < 0.3 * metrics[0]["loss"]
    assert before < 0.1 and after > 0.6


def sft_flags(tmp_path) -> list[str]:
    """`winnow distill sft` with a 1-layer teacher (3 steps) and student (2 steps)."""
    sets = {
        "task.digits": "[1]",
        "task.train_problems": "32",
        "task.test_problems": "4",
        "eval.max_new_tokens": "3",
        "output_dir": str(tmp_path / "models"),
    }
    for role, steps in (("teacher", 3), ("student", 2)):
        sets |= {
            f"{role}.architecture.hidden_size": "16",
            f"{role}.architecture.num_layers": "1",
            f"{role}.architecture.num_heads": "2",
            f"{role}.steps": str(steps),
            f"{role}.batch_size": "4",
        }
    return [flag for key, value in sets.items() for flag in ("--set", f"{key}={value}")]


def test_sft_logs_every_step_saves_manifests_and_needs_overwrite(tmp_path):
    from typer.testing import CliRunner

    from winnow.cli import app
    from winnow.common.provenance import read_manifest
    from winnow.common.runs import read_step_metrics

    runner = CliRunner()
    command = ["distill", "sft", "--quiet", "--out", str(tmp_path / "runs"), *sft_flags(tmp_path)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    rows = read_step_metrics(run / "metrics.jsonl")
    assert [(r["model"], r["step"]) for r in rows] == [
        ("teacher", 1),
        ("teacher", 2),
        ("teacher", 3),
        ("student", 1),
        ("student", 2),
    ]
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in rows)
    manifests = {role: read_manifest(tmp_path / "models" / role) for role in ("teacher", "student")}
    for manifest in manifests.values():
        assert manifest["run"]["folder"] == str(run.resolve()) and manifest["parents"] == []
        assert len(manifest["config_sha256"]) == len(manifest["data_sha256"]) == 64
    assert manifests["teacher"]["config_sha256"] == manifests["student"]["config_sha256"]

    again = runner.invoke(app, command)
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert "already exists; pass --overwrite" in again.output
    assert len(list((tmp_path / "runs").iterdir())) == 1  # refused before any run folder
    assert read_manifest(tmp_path / "models" / "teacher") == manifests["teacher"]
    result = runner.invoke(app, [*command, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "models" / "teacher")["run"] != manifests["teacher"]["run"]


def test_a_stopped_sft_run_resumes_exactly_and_replaces_its_own_models(tmp_path):
    import shutil

    from typer.testing import CliRunner

    from winnow.cli import app
    from winnow.common.provenance import read_manifest
    from winnow.common.runs import read_step_metrics

    runner = CliRunner()
    flags = [*sft_flags(tmp_path), "--set", "checkpoint_every=1", "--set", "keep_checkpoints=2"]
    first = runner.invoke(app, ["distill", "sft", "-q", "--out", str(tmp_path / "a"), *flags])
    assert first.exit_code == 0, first.output
    (stopped,) = (tmp_path / "a").iterdir()
    assert sorted(p.name for p in (stopped / "checkpoints" / "teacher").iterdir()) == [
        "step-000002",
        "step-000003",
    ]
    finished = json.loads((stopped / "metrics.json").read_text())["summary"]
    # as if stopped during the student's second step, after its step-1 checkpoint
    shutil.rmtree(stopped / "checkpoints" / "student" / "step-000002")
    shutil.rmtree(tmp_path / "models" / "student")

    args = ["distill", "sft", "-q", "--resume", str(stopped), "--out", str(tmp_path / "b")]
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output  # its own teacher folder needs no --overwrite
    (run,) = (tmp_path / "b").iterdir()
    assert json.loads((run / "metrics.json").read_text())["summary"] == finished
    rows = read_step_metrics(run / "metrics.jsonl")
    assert [(row["model"], row["step"]) for row in rows] == [("student", 2)]
    for role in ("teacher", "student"):
        assert read_manifest(tmp_path / "models" / role)["run"]["folder"] == str(run.resolve())

    # resuming the first run again: the folders are now the second run's, so they are refused
    again = runner.invoke(app, [*args[:-1], str(tmp_path / "c")])
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
