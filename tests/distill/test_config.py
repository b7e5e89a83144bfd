"""Tests of winnow.distill.config: configs build the tasks they name, and refuse bad mixes."""

from __future__ import annotations

import typing

import pytest

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.distill.config import SftConfig, TaskConfig, TrainConfig
from winnow.distill.tasks import TASKS, build_task


def test_task_names_are_the_registered_tasks():
    assert set(typing.get_args(TaskConfig.model_fields["name"].annotation)) == set(TASKS)


def test_math_task_config_builds_the_math_task(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n')
    config = load_config(TaskConfig, {"name": "math_answers", "path": str(path)})
    task = build_task(config.name, **config.build_kwargs())
    assert task.name == "math_answers"


def test_math_task_needs_a_file():
    with pytest.raises(ConfigError, match=r"set task\.path"):
        load_config(TaskConfig, {"name": "math_answers"})


def test_dropped_carry_task_answers_without_carries():
    config = load_config(TaskConfig, {"digits": [2], "carry": False})
    task = build_task(config.name, **config.build_kwargs())
    for problem in task.problems("train", 50, seed=0):
        a, b = (int(x) for x in problem.prompt[:-1].split("+"))
        expected = "".join(
            str((int(x) + int(y)) % 10) for x, y in zip(f"{a:02d}", f"{b:02d}", strict=True)
        )
        assert problem.answer == expected[::-1]


def test_drop_carry_is_for_addition_only():
    with pytest.raises(ConfigError, match="drop_carry"):
        load_config(
            SftConfig,
            {"task": {"name": "math_answers", "path": "x.jsonl"}, "student": {"drop_carry": True}},
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pacing.alpha=1"], "samples_per_prompt >= 2"),
        (["objective=grpo"], "samples_per_prompt >= 2"),
        (["resume_from=x", "arms={a: {name: all}, b: {name: all}}"], "one arm"),
    ],
)
def test_train_config_refuses_bad_mixes(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, overrides=overrides)
