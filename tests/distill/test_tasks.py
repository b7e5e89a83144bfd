"""Tests of winnow.distill.tasks: addition problems and splits, math answers, the task registry."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from winnow.common.exceptions import DataNotFoundError
from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks import (
    TASKS,
    AdditionTask,
    MathAnswerTask,
    Problem,
    Task,
    build_task,
    math_answers,
)
from winnow.distill.tasks.arithmetic import addition_answer
from winnow.distill.tasks.base import answer_text, split_of
from winnow.distill.tasks.math_answers import answers_equivalent, last_boxed, sympy_equivalent
from winnow.distill.tasks.problem_files import load_jsonl_problems

PROMPT = re.compile(r"(\d+)\+(\d+)=")


def operands(problem: Problem) -> tuple[int, int]:
    a, b = PROMPT.fullmatch(problem.prompt).groups()
    return int(a), int(b)


# -- addition ----------------------------------------------------------------------------------


def test_addition_prompts_answers_and_difficulty():
    task = AdditionTask(digits=(1, 2, 3))
    problems = task.problems("train", 300, seed=0)
    assert {p.difficulty for p in problems} == {1, 2, 3}
    for problem in problems:
        text_a, text_b = PROMPT.fullmatch(problem.prompt).groups()
        assert len(text_a) == len(text_b) == problem.difficulty
        assert problem.difficulty == 1 or not text_a.startswith("0")
        assert problem.answer == str(int(text_a) + int(text_b))[::-1]
        assert set(problem.prompt + problem.answer) <= set(task.alphabet)


def test_addition_answer_direction():
    assert addition_answer(123, 456) == "975"
    assert addition_answer(999, 999) == "8991"
    assert addition_answer(999, 999, reverse_answer=False) == "1998"
    problem = AdditionTask(digits=(2,), reverse_answer=False).problems("test", 1, seed=3)[0]
    a, b = operands(problem)
    assert problem.answer == str(a + b)


def test_splits_are_disjoint_even_up_to_commutation():
    task = AdditionTask(digits=(1, 2))
    train = {frozenset(operands(p)) for p in task.problems("train", 3000, seed=0)}
    test = {frozenset(operands(p)) for p in task.problems("test", 600, seed=1)}
    assert train and test
    assert not train & test
    # the split is a fixed property of the unordered pair
    assert split_of("3+7") in ("train", "test")


def test_every_digit_count_has_both_splits():
    for n in (1, 2, 3):
        task = AdditionTask(digits=(n,))
        assert len(task.problems("test", 5, seed=0)) == 5
        assert len(task.problems("train", 5, seed=0)) == 5


def test_problems_are_reproducible_from_the_seed():
    task = AdditionTask()
    assert task.problems("train", 20, seed=5) == task.problems("train", 20, seed=5)
    assert task.problems("train", 20, seed=5) != task.problems("train", 20, seed=6)
    assert task.problems("test", 0, seed=0) == []


def test_addition_verify():
    task = AdditionTask()
    problem = Problem(prompt="123+456=", answer="975", difficulty=3)
    assert task.verify(problem, "975")
    assert task.verify(problem, " 975 ")
    assert task.verify(problem, "975<eos>12")
    assert task.verify(problem, "975\n+1=2")
    assert not task.verify(problem, "97")
    assert not task.verify(problem, "9751")
    assert not task.verify(problem, "579")
    assert not task.verify(problem, "")
    assert answer_text("12<|im_end|>3\n4") == "12"


@pytest.mark.parametrize("digits", [(), (0,), (2, -1), (True,), ("3",)])
def test_addition_rejects_bad_digits(digits):
    with pytest.raises(DistillInputError, match="digits"):
        AdditionTask(digits=digits)


def test_bad_split_and_count():
    task = AdditionTask()
    with pytest.raises(DistillInputError, match="split must be one of train, test, got 'dev'"):
        task.problems("dev", 3, seed=0)
    with pytest.raises(DistillInputError, match="count must be an integer >= 0, got -1"):
        task.problems("train", -1, seed=0)


# -- math answers ------------------------------------------------------------------------------


@pytest.fixture()
def math_file(tmp_path):
    records = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]
    records[0] = {"problem": "What is 1/4 + 1/4?", "answer": "\\frac{1}{2}", "difficulty": 2}
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    return path


def test_math_verify_is_symbolic(math_file):
    task = MathAnswerTask(math_file)
    half = Problem(prompt="What is 1/4 + 1/4?", answer="\\frac{1}{2}", difficulty=2)
    assert task.verify(half, "so the answer is \\boxed{1/2}")
    assert task.verify(half, "1/4 + 1/4 = \\boxed{0.5}.")
    assert task.verify(half, "\\boxed{\\frac{1}{2}}")
    assert not task.verify(half, "\\boxed{1/3}")
    assert not task.verify(half, "the answer is 0.5")  # no \boxed
    assert task.verify(half, "\\boxed{3} no wait, \\boxed{1/2}")  # the last box counts
    assert not task.verify(half, "\\boxed{1/2} no wait, \\boxed{3}")
    decimal = Problem(prompt="Half of 1?", answer="0.5", difficulty=0)
    assert task.verify(decimal, "\\boxed{1/2}")
    assert not task.verify(decimal, "\\boxed{0.25}")


def test_math_problems_splits_and_prompt(math_file):
    task = MathAnswerTask(math_file, prompt_template="Q: {problem}\nA:")
    train = task.problems("train", 10, seed=0)
    test = task.problems("test", 2, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(p.prompt.startswith("Q: What is") and p.prompt.endswith("\nA:") for p in train)
    assert task.problems("train", 10, seed=0) == train
    default = MathAnswerTask(math_file).problems("train", 1, seed=0)[0]
    assert default.prompt.endswith("put your final answer within \\boxed{}.")
    available = sum(split_of(p.prompt) == "test" for p in load_jsonl_problems(math_file))
    with pytest.raises(DistillInputError, match=f"has {available} problems"):
        task.problems("test", 41, seed=0)


def test_math_difficulty_field(math_file):
    problems = load_jsonl_problems(math_file)
    assert len(problems) == 40
    assert problems[0].difficulty == 2 and problems[1].difficulty == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"problem": "p"}', r"math\.jsonl:2: field 'answer' must be a str or int or float"),
        ('{"answer": "1"}', r"math\.jsonl:2: field 'problem' must be a str"),
        ('{"problem": "p", "answer": "1", "difficulty": "hard"}', r":2: field 'difficulty'"),
        ("{not json", r"math\.jsonl:2: not valid JSON"),
        ("[1, 2]", r":2: expected a JSON object, got list"),
    ],
)
def test_bad_line_names_line_and_field(tmp_path, line, message):
    path = tmp_path / "math.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DistillInputError, match=message):
        MathAnswerTask(path)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"nope\.jsonl does not exist"):
        MathAnswerTask(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DistillInputError, match="holds no problems"):
        MathAnswerTask(empty)


def test_bad_prompt_template(math_file):
    with pytest.raises(DistillInputError, match="prompt_template"):
        MathAnswerTask(math_file, prompt_template="{question} \\boxed{}")


def test_last_boxed():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{x} and \\boxed { 7 }") == "7"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_sympy_fallback():
    assert sympy_equivalent("0.5", "\\frac{1}{2}")
    assert sympy_equivalent("\\dfrac{2}{4}", "1/2")
    assert sympy_equivalent("2*\\sqrt{2}", "\\sqrt{8}")
    assert sympy_equivalent("x+1", "x + 1")  # normalised strings
    assert not sympy_equivalent("1/3", "0.5")
    assert not sympy_equivalent("__import__('os')", "0")
    start = time.perf_counter()
    assert not sympy_equivalent("9^9^9^9", "1")
    assert not sympy_equivalent("9**9**9**9", "1")
    assert time.perf_counter() - start < 1.0


def test_fallback_used_without_math_verify(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    math_answers._math_verify.cache_clear()
    try:
        assert math_answers._math_verify() is None
        assert answers_equivalent("0.5", "\\frac{1}{2}")
        assert not answers_equivalent("0.4", "\\frac{1}{2}")
    finally:
        math_answers._math_verify.cache_clear()


# -- registry ----------------------------------------------------------------------------------


def test_build_task(math_file):
    task = build_task("addition", digits=[2], reverse_answer=False)
    assert isinstance(task, AdditionTask) and task.digits == (2,)
    assert isinstance(task, Task)
    assert isinstance(build_task("math_answers", path=str(math_file)), Task)
    assert set(TASKS) == {"addition", "math_answers", "verbose_addition"}


def test_build_task_errors():
    with pytest.raises(DistillInputError, match=r"'subtraction' is neither a registered"):
        build_task("subtraction")
    with pytest.raises(DistillInputError, match=r"task.params \['digit'\].*takes digits, reverse"):
        build_task("addition", digit=3)


def test_padded_operands_share_one_layout_and_keep_answers_and_splits():
    plain = AdditionTask(digits=(1, 3, 5))
    padded = AdditionTask(digits=(1, 3, 5), pad_operands=True)
    for a, b in zip(plain.problems("test", 40, 0), padded.problems("test", 40, 0), strict=True):
        assert len(b.prompt) == len("12345+12345=") and b.prompt.endswith("=")
        x, y = (int(v) for v in b.prompt[:-1].split("+"))
        assert a.prompt == f"{x}+{y}=" and (a.answer, a.difficulty) == (b.answer, b.difficulty)
