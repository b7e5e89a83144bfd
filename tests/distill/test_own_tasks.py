"""Your own task, verifier and reward without editing the package (issue 20): a task class by
import path and by file path trained end to end by ``distill sft`` and ``train``, a JSONL task
with each built-in verifier and a function, a GRPO reward function, and the errors."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.config import load_config
from winnow.common.runs import read_step_metrics
from winnow.distill.config import TaskConfig
from winnow.distill.exceptions import DistillInputError
from winnow.distill.jobs import configured_task
from winnow.distill.tasks import JsonlTask, Problem, Task, build_task

MODULE = "tests.distill.custom_tasks"
FILE = Path(__file__).with_name("custom_tasks.py")
runner = CliRunner()


def flags(settings: dict) -> list[str]:
    return [flag for key, value in settings.items() for flag in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> Path:
    """1-digit products as a JSONL file with its own field names."""
    path = tmp_path_factory.mktemp("jsonl") / "products.jsonl"
    rows = [{"question": f"{a}*{b}=", "product": a * b} for a in range(1, 10) for b in range(1, 10)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A teacher and a student for 1-digit multiplication, made by `winnow distill sft` from a
    task class that lives outside the package."""
    root = tmp_path_factory.mktemp("own")
    settings = {
        "task.name": f"{MODULE}:MultiplicationTask",
        "task.params": "{digits: 1}",
        "task.train_problems": 64,
        "task.test_problems": 8,
        "eval.max_new_tokens": 3,
        "output_dir": root / "models",
    }
    for role, steps in (("teacher", 6), ("student", 3)):
        for key, value in {"hidden_size": 16, "num_layers": 1, "num_heads": 2}.items():
            settings[f"{role}.architecture.{key}"] = value
        settings |= {f"{role}.steps": steps, f"{role}.batch_size": 8}
    command = ["distill", "sft", "-q", "--out", str(root / "runs"), *flags(settings)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    (run,) = (root / "runs").iterdir()
    assert "MultiplicationTask" in (run / "report.md").read_text()
    return root / "models"


def train(models: Path, out: Path, settings: dict):
    base = {
        "student.path": models / "student",
        "teacher.path": models / "teacher",
        "task.train_problems": 16,
        "task.test_problems": 8,
        "rollout.max_new_tokens": 3,
        "eval.every": 2,
        "eval.max_new_tokens": 3,
        "prompts_per_step": 4,
        "steps": 2,
        "cpu": "true",
    }
    command = ["distill", "train", "-q", "--out", str(out), *flags(base | settings)]
    return runner.invoke(app, command)


def test_an_own_task_class_trains_by_import_path(models, tmp_path):
    task = {"task.name": f"{MODULE}:MultiplicationTask", "task.params": "{digits: 1}"}
    result = train(models, tmp_path, task)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert [row["step"] for row in read_step_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def test_a_file_path_names_the_same_class():
    by_module = build_task(f"{MODULE}:MultiplicationTask", digits=2)
    by_file = build_task(f"{FILE}:MultiplicationTask", digits=2)
    assert isinstance(by_file, Task) and type(by_file).__name__ == "MultiplicationTask"
    assert by_module.problems("train", 5, seed=0) == by_file.problems("train", 5, seed=0)


def test_a_jsonl_task_trains_with_a_built_in_verifier(models, products, tmp_path):
    settings = {
        "task.kind": "jsonl",
        "task.path": products,
        "task.prompt_field": "question",
        "task.answer_field": "product",
        "task.verifier": "numeric",
    }
    result = train(models, tmp_path, settings)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert "jsonl products.jsonl" in (run / "report.md").read_text()


@pytest.mark.parametrize(
    ("verifier", "pattern", "answer", "right", "wrong"),
    [
        ("exact", None, "12", "12<eos>", "13"),
        ("numeric", None, "1024", "The answer is 1,024.", "1025"),
        ("numeric", None, "0.5", "0.50000001\n7", "5"),
        ("math_verify", None, r"\frac{1}{2}", r"so it is \boxed{0.5}", r"\boxed{2}"),
        ("regex", r"answer: (?P<answer>\d+)", "12", "my answer: 12 ok", "answer: 21"),
        ("regex", r"=(\d+)", "7", "so 3+4=7", "3+4=8"),
    ],
)
def test_each_built_in_verifier(products, verifier, pattern, answer, right, wrong):
    task = JsonlTask(products, "question", "product", verifier, pattern)
    problem = Problem("q", answer, 0)
    assert task.verify(problem, right) == 1.0 and task.verify(problem, wrong) == 0.0


def test_a_jsonl_task_takes_a_verifier_function_with_partial_credit(products):
    config = load_config(
        TaskConfig,
        {
            "kind": "jsonl",
            "path": str(products),
            "prompt_field": "question",
            "answer_field": "product",
            "verifier": f"{MODULE}:first_digit_right",
        },
    )
    task = configured_task(config)
    problem = task.problems("test", 1, seed=0)[0]
    assert task.verify(problem, problem.answer) == 1.0
    assert task.verify(problem, problem.answer[0] + "x") == 0.5


def test_grpo_takes_a_reward_function(models, tmp_path):
    grpo = {
        "objective": "grpo",
        "task.name": f"{MODULE}:MultiplicationTask",
        "rollout.samples_per_prompt": 2,
    }
    result = train(models, tmp_path / "a", grpo | {"grpo.reward": f"{MODULE}:quarter"})
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "a").iterdir()
    rewards = [r["train_reward"] for r in read_step_metrics(run / "metrics.jsonl") if r["step"]]
    assert rewards == [0.25, 0.25]
    bad = train(models, tmp_path / "b", grpo | {"grpo.reward": f"{MODULE}:not_a_number"})
    assert bad.exit_code == 2 and "returned nan; fix: return a finite float" in bad.output


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("no_such_package.tasks:Task", {}, "cannot import no_such_package.tasks (ModuleNotFound"),
        ("missing/tasks.py:Task", {}, "no file missing/tasks.py"),
        (f"{MODULE}:DivisionTask", {}, "has no 'DivisionTask'; it defines MultiplicationTask"),
        (f"{MODULE}:MultiplicationTask", {"digit": 2}, "task.params ['digit'] do not fit"),
        (f"{MODULE}:", {}, "is not an import path; fix: write it as 'package.module:Name'"),
    ],
)
def test_bad_import_paths_say_what_is_wrong(name, params, message):
    with pytest.raises(DistillInputError) as error:
        build_task(name, **params)
    assert message in str(error.value)


def test_the_cli_turns_a_bad_task_into_one_line(tmp_path):
    settings = {
        "task.name": f"{MODULE}:MultiplicationTask",
        "task.params": "{digit: 2}",
        "output_dir": tmp_path / "models",
    }
    out = tmp_path / "runs"
    task = {key: value for key, value in settings.items() if key.startswith("task.")}
    for job, chosen in (("sft", settings), ("train", task)):
        command = ["distill", job, "-q", "--out", str(out), *flags(chosen)]
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "takes digits" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # refused before any run folder was made


def test_the_docs_example_task_and_commands_are_valid(tmp_path, monkeypatch):
    """docs/distill.md's "Your own task": its file builds by path and verifies its own answers,
    and both documented commands parse into valid configs."""
    from winnow.distill.config import SftConfig, TrainConfig

    docs = (Path(__file__).parents[2] / "docs" / "distill.md").read_text()
    after = docs.split("<!-- own-task-example -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    commands = after.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    (tmp_path / "my_task.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    task = build_task("my_task.py:Multiplication")
    problems = task.problems("test", 20, seed=0)
    assert all(task.verify(p, p.answer + "\n") and not task.verify(p, "0") for p in problems)
    assert not {p.prompt for p in problems} & {p.prompt for p in task.problems("train", 200, 0)}
    parsed = []
    for line, model in zip(commands.strip().splitlines(), (SftConfig, TrainConfig), strict=True):
        sets = [part for part in line.split() if "=" in part]
        parsed.append(load_config(model, None, sets))
    assert all(config.task.name == "my_task.py:Multiplication" for config in parsed)
