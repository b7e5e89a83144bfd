import numpy as np
import pytest

from winnow.route.batches import make_batches
from winnow.route.exceptions import RouteInputError


def covers_each_query_once(batches, n):
    joined = np.concatenate(batches)
    return sorted(joined.tolist()) == list(range(n))


@pytest.mark.parametrize("stream", ["random", "task", "adversarial"])
def test_every_query_in_exactly_one_batch(stream):
    rng = np.random.default_rng(0)
    tasks = rng.choice(["arc", "mbpp", "gsm"], size=103)
    difficulty = rng.uniform(size=103)
    batches = make_batches(stream, 103, 10, seed=1, tasks=tasks, difficulty=difficulty)
    assert covers_each_query_once(batches, 103)
    assert all(len(b) <= 10 for b in batches)


def test_task_batches_are_homogeneous():
    tasks = np.array(["a"] * 25 + ["b"] * 12)
    batches = make_batches("task", 37, 10, seed=0, tasks=tasks)
    assert all(len(set(tasks[b])) == 1 for b in batches)
    assert len(batches) == 3 + 2  # 25 -> 10, 10, 5 and 12 -> 10, 2


def test_adversarial_puts_hardest_first():
    difficulty = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    batches = make_batches("adversarial", 5, 2, difficulty=difficulty)
    assert [b.tolist() for b in batches] == [[1, 3], [2, 4], [0]]


def test_same_seed_same_batches():
    first = make_batches("random", 50, 7, seed=3)
    second = make_batches("random", 50, 7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_errors_name_the_problem():
    with pytest.raises(RouteInputError, match="not one of random, task, adversarial"):
        make_batches("bursty", 10, 2)
    with pytest.raises(RouteInputError, match="needs difficulty"):
        make_batches("adversarial", 10, 2)
    with pytest.raises(RouteInputError, match="batch_size"):
        make_batches("random", 10, 0)
