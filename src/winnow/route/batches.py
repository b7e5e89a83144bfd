"""Batch streams: how a traffic sample is cut into the batches a router sees.

Each stream is a pure function returning a list of index arrays into the sample; every query
appears in exactly one batch. ``adversarial`` puts the hardest queries together, the case where
per-query routers overspend and batch-level routing matters most.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from winnow.route.exceptions import RouteInputError

__all__ = ["STREAMS", "adversarial_batches", "make_batches", "random_batches", "task_batches"]


def random_batches(n_queries: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Queries in a random order, cut into consecutive batches of ``batch_size``."""
    order = np.random.default_rng(seed).permutation(n_queries)
    return _cut(order, batch_size)


def task_batches(tasks: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Batches drawn from one task at a time (a task-skewed stream); tasks in random order."""
    rng = np.random.default_rng(seed)
    batches: list[np.ndarray] = []
    labels = np.unique(tasks)
    for label in rng.permutation(labels):
        members = rng.permutation(np.flatnonzero(tasks == label))
        batches.extend(_cut(members, batch_size))
    return batches


def adversarial_batches(difficulty: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Queries sorted from hardest to easiest (``difficulty: [n]``, higher = harder), then cut."""
    order = np.argsort(-np.asarray(difficulty), kind="stable")
    return _cut(order, batch_size)


STREAMS: dict[str, Callable[..., list[np.ndarray]]] = {
    "random": lambda n_queries, batch_size, seed, tasks, difficulty: random_batches(
        n_queries, batch_size, seed
    ),
    "task": lambda n_queries, batch_size, seed, tasks, difficulty: task_batches(
        tasks, batch_size, seed
    ),
    "adversarial": lambda n_queries, batch_size, seed, tasks, difficulty: adversarial_batches(
        difficulty, batch_size
    ),
}


def make_batches(
    stream: str,
    n_queries: int,
    batch_size: int,
    seed: int = 0,
    tasks: np.ndarray | None = None,
    difficulty: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Batches of stream ``stream`` (``"random"``, ``"task"`` or ``"adversarial"``).

    ``tasks: [n]`` labels are needed for ``"task"``, ``difficulty: [n]`` for ``"adversarial"``
    (for example one minus the best predicted quality of each query).
    """
    if stream not in STREAMS:
        raise RouteInputError(f"stream {stream!r} is not one of {', '.join(STREAMS)}")
    if batch_size < 1:
        raise RouteInputError(f"batch_size must be >= 1, got {batch_size}")
    needed = {"task": ("tasks", tasks), "adversarial": ("difficulty", difficulty)}.get(stream)
    if needed is not None:
        name, value = needed
        if value is None or len(value) != n_queries:
            raise RouteInputError(f"stream {stream!r} needs {name} with one value per query")
    return STREAMS[stream](n_queries, batch_size, seed, tasks, difficulty)


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
