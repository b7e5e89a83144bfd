"""Tests of the OPSDC toy task (winnow.distill.tasks.verbose) and its config plumbing."""

from __future__ import annotations

import json
import random

import pytest

from winnow.common.config import load_config
from winnow.distill.config import SftConfig, TaskConfig, TrainConfig
from winnow.distill.exceptions import DistillInputError
from winnow.distill.jobs import run_train
from winnow.distill.models import char_tokenizer
from winnow.distill.sft_job import run_sft
from winnow.distill.tasks import (
    CONCISE_INSTRUCTION,
    AdditionTask,
    Problem,
    Task,
    VerboseAdditionTask,
    build_task,
)
from winnow.distill.tasks.verbose import concise_answer, final_answer, verbose_answer

PROBLEM = Problem(prompt="47+38=", answer="58", difficulty=2)  # 85, least-significant first


def test_verify_reads_the_final_answer_of_either_form():
    task = VerboseAdditionTask(instruction="Be concise. ")
    assert isinstance(task, Task)
    assert task.verify(PROBLEM, "58")
    assert task.verify(PROBLEM, "58<eos>junk")
    assert task.verify(PROBLEM, "we need 47 plus 38. hmm. ones 7+8=15. tens 4+3+1=8. so 58")
    assert task.verify(PROBLEM, "ok. so 58\nso 12")
    assert not task.verify(PROBLEM, "we need 47 plus 38. so 85")
    assert not task.verify(PROBLEM, "we need 47 plus 38. ones 7+8=15. tens 4+3+1=58")
    assert not task.verify(PROBLEM, "so 58.")  # the answer must end the response
    assert not task.verify(PROBLEM, "so 581")
    assert not task.verify(PROBLEM, "")
    assert final_answer("the sum of 1 and 2. so") is None


def test_verbose_answers_are_correct_long_and_varied():
    rng = random.Random(0)
    texts = []
    for _ in range(300):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        text = verbose_answer(a, b, rng)
        problem = Problem(f"{a}+{b}=", str(a + b)[::-1], 2)
        assert VerboseAdditionTask().verify(problem, text)
        assert text.endswith(f"so {str(a + b)[::-1]}")
        assert "\n" not in text
        texts.append(text)
    lengths = [len(t) for t in texts]
    assert min(lengths) >= 5 and max(lengths) <= 76
    assert len(set(lengths)) > 10
    assert any("ones" in t for t in texts) and any("ones" not in t for t in texts)
    assert verbose_answer(58, 67, random.Random(3), p_restate=0, p_scratch=1, max_fillers=0) == (
        "ones 8+7=15. tens 5+6+1=12. so 521"
    )
    assert concise_answer(58, 67, random.Random(3), p_detail=0) == "521"


def test_demonstrations_mix_verbose_and_instructed_examples():
    task = VerboseAdditionTask(digits=(2,), instruction="Be concise. ")
    examples = task.demonstrations("train", 400, seed=1)
    assert examples == task.demonstrations("train", 400, seed=1)
    plain = task.problems("train", 400, seed=1)
    instructed = [e for e in examples if e.prompt.startswith("Be concise. ")]
    assert 0.4 < len(instructed) / len(examples) < 0.6
    bare = [e for e in instructed if e.answer.isdigit()]
    assert 0.6 < len(bare) / len(instructed) < 0.85  # (1 - concise_detail)^2 = 0.72
    for example, problem in zip(examples, plain, strict=True):
        assert example.prompt.endswith(problem.prompt)
        assert task.verify(problem, example.answer)
        if example in instructed:
            assert not any(filler in example.answer for filler in ("hmm", "ok.", "well"))
        else:
            assert example.prompt == problem.prompt
            assert example.answer.endswith(" " + problem.answer)
    terse = VerboseAdditionTask(instruction="Be concise. ", concise_detail=0)
    assert all(
        e.answer.isdigit() for e in terse.demonstrations("train", 50, 0) if e.prompt[0] == "B"
    )
    assert task.instructed([PROBLEM]) == [Problem("Be concise. 47+38=", "58", 2)]


def test_problems_and_splits_are_those_of_addition():
    task = VerboseAdditionTask(digits=(2, 3))
    assert task.problems("test", 50, seed=4) == AdditionTask(digits=(2, 3)).problems(
        "test", 50, seed=4
    )


def test_tokenizer_spells_the_instruction_and_the_verbose_answers():
    tokenizer = char_tokenizer(VerboseAdditionTask.alphabet)
    text = CONCISE_INSTRUCTION + "47+38=" + verbose_answer(47, 38, random.Random(0))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert len(ids) == len(text)  # one token per character, the em dash included
    assert tokenizer.decode(ids) == text
    assert "—" in CONCISE_INSTRUCTION and CONCISE_INSTRUCTION.startswith("Solve the following")


def test_instruction_must_be_spelled_by_the_alphabet():
    assert VerboseAdditionTask().instruction == CONCISE_INSTRUCTION
    with pytest.raises(DistillInputError, match=r"characters outside it: \['!'\]"):
        VerboseAdditionTask(instruction="Be brief!")
    with pytest.raises(DistillInputError, match="instruction must be a non-empty string"):
        VerboseAdditionTask(instruction="")
    with pytest.raises(DistillInputError, match=r"instructed_share must be in \[0, 1\], got 1.5"):
        VerboseAdditionTask(instructed_share=1.5)
    with pytest.raises(DistillInputError, match="concise_detail"):
        VerboseAdditionTask(concise_detail=-0.1)


def test_task_config_builds_the_verbose_task():
    config = TaskConfig(name="verbose_addition", digits=[2], instruction="Be concise. ")
    task = build_task(config.name, **config.build_kwargs())
    assert isinstance(task, VerboseAdditionTask)
    assert task.instruction == "Be concise. " and task.digits == (2,)
    default = TaskConfig(name="verbose_addition")
    assert build_task(default.name, **default.build_kwargs()).instruction == CONCISE_INSTRUCTION


def test_sft_config_can_train_the_teacher_only():
    config = load_config(SftConfig, {"task": {"name": "verbose_addition"}, "student": None})
    assert config.student is None


def test_sft_then_opsdc_end_to_end(tmp_path):
    """A base model trained on the demonstrations (teacher only), then two OPSDC steps on it:
    the report names the self-teacher's instruction and plots length against step."""
    sft = load_config(
        SftConfig,
        {
            "task": {
                "name": "verbose_addition",
                "instruction": "Be concise. ",
                "train_problems": 64,
                "test_problems": 8,
            },
            "output_dir": str(tmp_path / "models"),
            "teacher": {
                "architecture": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
                "steps": 3,
                "batch_size": 8,
            },
            "student": None,
            "eval": {"max_new_tokens": 8},
        },
    )
    run_sft(sft, root=tmp_path / "runs", quiet=True)
    base = tmp_path / "models" / "teacher"
    assert base.is_dir() and not (tmp_path / "models" / "student").exists()
    summary = json.loads(next((tmp_path / "runs").glob("distill-sft-*/metrics.json")).read_text())
    assert set(summary["summary"]) == {"teacher"}
    assert {"instructed accuracy", "instructed length", "mean length"} <= set(
        summary["summary"]["teacher"]
    )
    train = load_config(
        TrainConfig,
        {
            "student": {"path": str(base)},
            "teacher": {"path": str(base)},
            "task": sft.task.model_dump(),
            "teacher_instruction": "Be concise. ",
            "teacher_refresh_every": 1,
            "divergence": {"kind": "reverse_kl"},
            "rollout": {"max_new_tokens": 8},
            "eval": {"every": 2, "max_new_tokens": 8},
            "steps": 2,
            "prompts_per_step": 4,
            "cpu": True,
        },
    )
    report = run_train(train, root=tmp_path / "runs", quiet=True)
    markdown = (report.parent / "report.md").read_text()
    assert "OPSDC" in markdown and "'Be concise. '" in markdown and "every 1 steps" in markdown
    assert (report.parent / "plots" / "length_vs_step.png").is_file()
    row = json.loads((report.parent / "metrics.json").read_text())["summary"]["all"]
    assert row["start length"] > 0 and "final length" in row
