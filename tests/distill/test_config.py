"""Tests of winnow.distill.config: configs build the tasks they name, and refuse bad mixes."""

from __future__ import annotations

import pytest

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.distill.config import SftConfig, TaskConfig, TrainConfig
from winnow.distill.tasks import TASKS, build_task


def test_task_names_are_the_registered_tasks_or_import_paths():
    for name in TASKS:
        assert load_config(TaskConfig, {"name": name, "path": "x.jsonl"}).name == name
    assert load_config(TaskConfig, {"name": "my_tasks:Multiplication"}).name.endswith("tion")
    with pytest.raises(ConfigError, match="neither a registered task"):
        load_config(TaskConfig, {"name": "subtraction"})
    with pytest.raises(ConfigError, match=r"task\.params go to your own task class"):
        load_config(TaskConfig, {"name": "addition", "params": {"digits": [2]}})


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


def test_drop_carry_true_means_every_answer_and_a_share_mixes():
    from winnow.distill.sft_job import _with_dropped_carries

    assert load_config(SftConfig, {"student": {"drop_carry": True}}).student.drop_carry == 1.0
    config = load_config(SftConfig, {"task": {"digits": [3], "train_problems": 400}})
    train = build_task("addition", digits=(3,)).problems("train", 400, seed=config.seed)
    dropped = build_task("addition", digits=(3,), carry=False).problems("train", 400, seed=0)
    assert [p.prompt for p in train] == [p.prompt for p in dropped]
    assert _with_dropped_carries(config, train, 0.0, None) == train
    assert _with_dropped_carries(config, train, 1.0, None) == dropped
    mixed = _with_dropped_carries(config, train, 0.5, None)
    differ = [i for i, (a, b) in enumerate(zip(train, dropped, strict=True)) if a != b]
    share = sum(mixed[i] == dropped[i] for i in differ) / len(differ)
    assert 0.4 < share < 0.6


def test_sft_init_from_fine_tunes_a_saved_model_and_teacher_null_skips_it(tmp_path):
    import json

    from winnow.distill.sft_job import run_sft

    tiny = {"architecture": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}, "steps": 2}
    base = {
        "task": {"digits": [1], "train_problems": 32, "test_problems": 4},
        "eval": {"max_new_tokens": 3},
    }
    first = load_config(
        SftConfig, base | {"output_dir": str(tmp_path / "a"), "teacher": tiny, "student": None}
    )
    run_sft(first, root=tmp_path / "runs-a", quiet=True)
    student = {"init_from": str(tmp_path / "a" / "teacher"), "drop_carry": 0.5, "steps": 1}
    second = load_config(
        SftConfig,
        base | {"output_dir": str(tmp_path / "b"), "teacher": None, "student": student},
    )
    run_sft(second, root=tmp_path / "runs-b", quiet=True)
    assert not (tmp_path / "b" / "teacher").exists()

    def read(runs):
        return json.loads(next(runs.glob("*/metrics.json")).read_text())["summary"]

    # The fine-tuned student has the saved model's size, not the default student architecture.
    assert set(read(tmp_path / "runs-b")) == {"student"}
    assert (
        read(tmp_path / "runs-b")["student"]["parameters"]
        == read(tmp_path / "runs-a")["teacher"]["parameters"]
    )
