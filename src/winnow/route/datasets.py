"""Per-query x per-model quality and cost matrices: RouterBench, RouteLLM, or any table.

Every loader returns a :class:`RoutingData`: ``n`` queries (prompts) answered by ``m`` models,
with a correctness matrix ``quality [n, m]`` and, where the source has one, a cost matrix
``cost [n, m]`` in USD.

The column convention (RouterBench's, as re-split by RouterDC) is one row per query and

- ``prompt``: the query text; a Python-literal list of strings (``"['part 1', 'part 2']"``) is
  parsed and its parts joined with ``"\\n"``;
- ``<model>``: correctness of that model on the query, ``{0, 1}``, bool or a score in ``[0, 1]``;
- ``<model>|total_cost``: optional, USD cost of the query on that model;
- ``eval_name`` or ``task``: optional task name; ``sample_id``: optional query id.

Rows with a missing correctness or cost value are dropped at load time and counted in
:attr:`RoutingData.n_dropped` (RouterBench's ARC files have 20 such rows in train, 8 in test).

>>> data = load_routerbench("test")  # doctest: +SKIP
>>> data.quality.shape, data.cost.shape, data.n_dropped  # doctest: +SKIP
((565, 11), (565, 11), 8)
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from winnow.common.data import dataset_path
from winnow.common.extras import require
from winnow.common.inputs import read_table
from winnow.route.exceptions import RouteInputError

__all__ = [
    "COST_SUFFIX",
    "ROUTELLM_BENCHMARKS",
    "ROUTERBENCH_TASKS",
    "RoutingData",
    "load_routellm",
    "load_routerbench",
    "load_routing_table",
    "shared_prefixes",
    "split_indices",
    "split_queries",
    "strip_prefixes",
    "table_to_routing_data",
]

COST_SUFFIX = "|total_cost"
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp")
ROUTELLM_BENCHMARKS = ("gsm8k", "mmlu")
_SPLITS = ("train", "test")
_CONVENTION = (
    "the routing table convention is: a 'prompt' column, one correctness column '<model>' per "
    "model (values in [0, 1]), optional cost columns '<model>|total_cost' (USD), optional "
    "'eval_name' or 'task' and 'sample_id'"
)


@dataclass(frozen=True, eq=False)
class RoutingData:
    """Quality and cost of ``m`` models on ``n`` queries.

    Shape:
        ``prompts``: ``n`` strings. ``quality``: ``[n, m]`` float in ``[0, 1]`` (correctness,
        usually ``{0, 1}``). ``cost``: ``[n, m]`` float USD, ``>= 0``, or ``None`` when the source
        has no costs. ``models``: ``m`` names, the column order of ``quality`` and ``cost``.
        ``tasks``: ``[n]`` str, the task of each query (``"arc-challenge"``, ``"mbpp"``, an MMLU
        subject). ``ids``: ``[n]`` str query ids from the source; a query asked twice keeps its
        id on both rows (RouterBench repeats a few), which :func:`split_queries` keeps together.

    ``n_dropped`` counts the source rows removed at load time because a correctness or cost
    value was missing; :meth:`subset` carries it unchanged, as a note on where the data came from.
    """

    prompts: list[str]
    quality: np.ndarray
    cost: np.ndarray | None
    models: tuple[str, ...]
    tasks: np.ndarray
    ids: np.ndarray
    n_dropped: int = field(default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", list(self.prompts))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "quality", np.asarray(self.quality, dtype=np.float64))
        object.__setattr__(self, "tasks", np.asarray(self.tasks, dtype=str))
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=str))
        if self.cost is not None:
            object.__setattr__(self, "cost", np.asarray(self.cost, dtype=np.float64))
        self._validate()

    def _validate(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if self.quality.shape != (n, m):
            raise RouteInputError(
                f"quality has shape {self.quality.shape}, expected (n_prompts, n_models) = "
                f"({n}, {m}). Fix: one row per prompt and one column per model"
            )
        if not np.all((self.quality >= 0) & (self.quality <= 1)):
            raise RouteInputError(
                "quality must hold values in [0, 1] with no NaN; fix: drop or fill missing rows"
            )
        if self.cost is not None and self.cost.shape != (n, m):
            raise RouteInputError(f"cost has shape {self.cost.shape}, expected ({n}, {m})")
        if self.cost is not None and not np.all(np.isfinite(self.cost) & (self.cost >= 0)):
            raise RouteInputError("cost must be finite and >= 0 (USD per query); fix the table")
        for name, values in (("tasks", self.tasks), ("ids", self.ids)):
            if values.shape != (n,):
                raise RouteInputError(f"{name} has shape {values.shape}, expected ({n},)")
        if len(set(self.models)) != m:
            raise RouteInputError(f"model names repeat: {list(self.models)}")

    @property
    def n_queries(self) -> int:
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def subset(self, indices: Sequence[int] | np.ndarray) -> RoutingData:
        """The queries at ``indices`` (ints, or a boolean mask of length ``n``), in that order."""
        index = np.asarray(indices)
        if index.dtype == bool:
            if index.shape != (self.n_queries,):
                raise RouteInputError(
                    f"a boolean mask must have shape ({self.n_queries},); got {index.shape}"
                )
            index = np.flatnonzero(index)
        index = index.astype(np.intp, copy=False)
        return RoutingData(
            prompts=[self.prompts[i] for i in index],
            quality=self.quality[index],
            cost=None if self.cost is None else self.cost[index],
            models=self.models,
            tasks=self.tasks[index],
            ids=self.ids[index],
            n_dropped=self.n_dropped,
        )


def load_routerbench(
    split: str = "train",
    tasks: Sequence[str] = ROUTERBENCH_TASKS,
    root: str | Path | None = None,
) -> RoutingData:
    """RouterBench correctness and cost of 11 LLMs on ARC-Challenge and MBPP queries.

    Args:
        split: ``"train"`` or ``"test"`` (RouterDC's split of a RouterBench subset).
        tasks: any of ``"arc_challenge"``, ``"mbpp"``; the queries of each, in file order.
        root: folder holding ``<task>_<split>.csv``; default the shared data set
            ``routing/routerbench_subset`` (checksums verified).

    Rows with a missing correctness value (a few ARC rows) are dropped; their number is
    ``n_dropped`` of the result. ARC prompts share the same five in-context examples; see
    :func:`shared_prefixes` before embedding them.
    """
    if split not in _SPLITS:
        raise RouteInputError(f"split must be one of {_SPLITS}; got {split!r}")
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [task for task in tasks if task not in ROUTERBENCH_TASKS]
    if unknown or not tasks:
        raise RouteInputError(
            f"tasks must be a non-empty subset of {ROUTERBENCH_TASKS}; got {list(tasks)}"
        )
    folder = Path(root) if root is not None else dataset_path("routing") / "routerbench_subset"
    pd = require("pandas", "route")
    frames = [pd.read_csv(folder / f"{task}_{split}.csv", index_col=0) for task in tasks]
    return table_to_routing_data(
        pd.concat(frames, ignore_index=True), source=f"routerbench-{split}"
    )


def load_routellm(
    benchmark: str = "gsm8k",
    cost_per_query: Mapping[str, float] | None = None,
    root: str | Path | None = None,
) -> RoutingData:
    """RouteLLM's evaluation data: correctness of a strong and a weak model (2 models).

    Args:
        benchmark: ``"gsm8k"`` (1,319 queries) or ``"mmlu"`` (14,042 queries, 57 subjects; the
            task of each query is its subject, e.g. ``"abstract_algebra"``).
        cost_per_query: optional constant USD cost per query for each model, e.g.
            ``{"gpt-4-1106-preview": 0.01, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.0006}``.
            RouteLLM's data has no costs, so ``cost`` is ``None`` unless this is given.
        root: folder holding ``gsm8k_responses.csv`` and ``mmlu/``; default the shared data set
            ``routing/routellm_mmlu_gsm8k``.
    """
    if benchmark not in ROUTELLM_BENCHMARKS:
        raise RouteInputError(f"benchmark must be one of {ROUTELLM_BENCHMARKS}; got {benchmark!r}")
    folder = Path(root) if root is not None else dataset_path("routing") / "routellm_mmlu_gsm8k"
    pd = require("pandas", "route")
    if benchmark == "gsm8k":
        frame = _with_task(pd.read_csv(folder / "gsm8k_responses.csv"), "gsm8k", "gsm8k")
    else:
        files = sorted((folder / "mmlu").glob("mmlu_*.csv"))
        if not files:
            raise RouteInputError(f"no mmlu_<subject>.csv files under {folder / 'mmlu'}")
        subjects = [path.stem.removeprefix("mmlu_") for path in files]
        frame = pd.concat(
            [
                _with_task(pd.read_csv(path), subject, f"mmlu.{subject}")
                for path, subject in zip(files, subjects, strict=True)
            ],
            ignore_index=True,
        )
    reserved = ("prompt", "task", "sample_id")
    models = [c for c in frame.columns if c not in reserved and not c.endswith("_response")]
    data = table_to_routing_data(frame, models=models, source=f"routellm-{benchmark}")
    if cost_per_query is None:
        return data
    missing = sorted(set(models) - set(cost_per_query))
    unknown = sorted(set(cost_per_query) - set(models))
    if missing or unknown:
        raise RouteInputError(
            f"cost_per_query must give one cost for each model {models}; missing {missing}, "
            f"unknown {unknown}"
        )
    cost = np.tile([float(cost_per_query[m]) for m in data.models], (data.n_queries, 1))
    return RoutingData(
        data.prompts, data.quality, cost, data.models, data.tasks, data.ids, data.n_dropped
    )


def load_routing_table(
    path_or_spec: str | Path, models: Sequence[str] | None = None
) -> RoutingData:
    """Load any CSV or Parquet table in the routing column convention (see the module doc).

    Args:
        path_or_spec: a file path, or ``"<data set>/<file>"`` resolved by
            :func:`winnow.common.data.data_file`; a missing, empty, binary or non-UTF-8
            file raises :class:`~winnow.common.exceptions.InputFileError` (one line).
        models: the model columns. By default, every ``c`` with a ``c|total_cost`` column; a
            table without cost columns must name its models here (then ``cost`` is ``None``).
    """
    frame = read_table(path_or_spec, [], "routing table")
    return table_to_routing_data(frame, models=models, source=str(path_or_spec))


def table_to_routing_data(
    frame, models: Sequence[str] | None = None, source: str = "table"
) -> RoutingData:
    """A pandas DataFrame in the routing column convention as :class:`RoutingData`.

    ``source`` names the table in error messages and prefixes generated query ids.
    """
    columns = [str(c) for c in frame.columns]
    if "prompt" not in columns:
        raise RouteInputError(f"{source}: no 'prompt' column; {_CONVENTION}")
    models = _resolve_models(columns, models, source)
    has_cost = any(f"{model}{COST_SUFFIX}" in columns for model in models)
    cost_columns = [f"{model}{COST_SUFFIX}" for model in models]
    missing_cost = [c for c in cost_columns if c not in columns]
    if has_cost and missing_cost:
        raise RouteInputError(
            f"{source}: cost columns missing for some models: {missing_cost}; {_CONVENTION}"
        )
    quality = _numeric(frame, models, source)
    cost = _numeric(frame, cost_columns, source) if has_cost else None
    _check_unit_interval(quality, models, source)
    complete = ~np.isnan(quality).any(axis=1)
    if cost is not None:
        complete &= ~np.isnan(cost).any(axis=1)
    keep = np.flatnonzero(complete)
    task_column = next((c for c in ("eval_name", "task") if c in columns), None)
    tasks = (
        frame[task_column].astype(str).to_numpy() if task_column else np.full(len(frame), source)
    )
    if "sample_id" in columns:
        ids = frame["sample_id"].astype(str).to_numpy()
    else:
        ids = np.array([f"{source}.{i}" for i in range(len(frame))])
    prompts = frame["prompt"].tolist()
    return RoutingData(
        prompts=[_prompt_text(prompts[i], source, i) for i in keep],
        quality=quality[keep],
        cost=None if cost is None else cost[keep],
        models=tuple(models),
        tasks=tasks[keep],
        ids=ids[keep],
        n_dropped=int(len(frame) - len(keep)),
    )


def split_indices(
    ids: Sequence[str] | np.ndarray, fractions: Sequence[float], seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Row indices of a random split of the queries, one array per fraction.

    Rows that share an id are one query and go to the same part, so no query is in two parts.
    Part ``k`` receives about ``fractions[k]`` of the distinct ids. Each array is sorted.

    Args:
        ids: ``[n]`` query id of each row.
        fractions: positive, summing to 1, e.g. ``(0.6, 0.2, 0.2)``.
        seed: the same seed gives the same split.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size < 1 or np.any(fractions <= 0):
        raise RouteInputError(f"fractions must be positive numbers; got {fractions.tolist()}")
    if not np.isclose(fractions.sum(), 1.0, atol=1e-9):
        raise RouteInputError(
            f"fractions must sum to 1; got {fractions.tolist()} (sum {fractions.sum():g})"
        )
    unique, group = np.unique(np.asarray(ids, dtype=str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    cuts = np.round(np.cumsum(fractions) * len(unique)).astype(int)
    part_of_group = np.empty(len(unique), dtype=np.intp)
    start = 0
    for part, stop in enumerate(cuts):
        if stop <= start:
            raise RouteInputError(
                f"part {part} of the split would be empty: {len(unique)} queries are too few for "
                f"fractions {fractions.tolist()}. Fix: use fewer parts or larger fractions"
            )
        part_of_group[order[start:stop]] = part
        start = stop
    parts = part_of_group[group]
    return tuple(np.flatnonzero(parts == k) for k in range(len(fractions)))


def split_queries(
    data: RoutingData, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[RoutingData, ...]:
    """Query-level random split of ``data`` (e.g. train/val/test); see :func:`split_indices`."""
    return tuple(data.subset(index) for index in split_indices(data.ids, fractions, seed))


def shared_prefixes(
    prompts: Sequence[str], tasks: Sequence[str], boundary: str = "\n\n"
) -> dict[str, str]:
    """The leading text shared by every prompt of a task, such as in-context examples.

    RouterBench's ARC prompts all start with the same five worked examples (1,653 characters),
    longer than MiniLM's 256-token window, so their raw embeddings are nearly identical. Compute
    the prefixes on training prompts and remove them everywhere with :func:`strip_prefixes`.

    Args:
        prompts: ``n`` prompt texts; ``tasks``: ``[n]`` task of each.
        boundary: a prefix is cut back to end just after its last ``boundary``, so that no
            partial line of the query is removed.

    Returns:
        ``{task: prefix}`` for every task with at least two prompts and a non-empty prefix.
    """
    by_task: dict[str, list[str]] = {}
    for prompt, task in zip(prompts, tasks, strict=True):
        by_task.setdefault(str(task), []).append(prompt)
    prefixes = {}
    for task, texts in by_task.items():
        common = _common_prefix(texts) if len(texts) > 1 else ""
        cut = common.rfind(boundary)
        if cut >= 0:
            prefixes[task] = common[: cut + len(boundary)]
    return prefixes


def strip_prefixes(
    prompts: Sequence[str], tasks: Sequence[str], prefixes: Mapping[str, str]
) -> list[str]:
    """Each prompt without its task's prefix from :func:`shared_prefixes`, where it starts so.

    A prompt that would become blank is kept whole.
    """
    stripped = []
    for prompt, task in zip(prompts, tasks, strict=True):
        prefix = prefixes.get(str(task), "")
        rest = prompt[len(prefix) :] if prefix and prompt.startswith(prefix) else prompt
        stripped.append(rest if rest.strip() else prompt)
    return stripped


def _common_prefix(texts: Sequence[str]) -> str:
    # The lexicographically first and last strings differ earliest; their prefix is everyone's.
    first, last = min(texts), max(texts)
    size = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    return first[:size]


def _with_task(frame, task: str, id_prefix: str):
    ids = [f"{id_prefix}.{i}" for i in range(len(frame))]
    return frame.assign(task=task, sample_id=ids)


def _resolve_models(columns: list[str], models: Sequence[str] | None, source: str) -> list[str]:
    if models is None:
        models = [c.removesuffix(COST_SUFFIX) for c in columns if c.endswith(COST_SUFFIX)]
        if not models:
            raise RouteInputError(
                f"{source}: no '<model>{COST_SUFFIX}' columns, so the models are unknown. Fix: "
                f"pass models=[...] naming the correctness columns; {_CONVENTION}"
            )
    models = [str(model) for model in models]
    if not models:
        raise RouteInputError(f"{source}: models is empty; name at least one model column")
    missing = [model for model in models if model not in columns]
    if missing:
        raise RouteInputError(
            f"{source}: correctness columns missing for models {missing}; {_CONVENTION}"
        )
    return models


def _numeric(frame, columns: Sequence[str], source: str) -> np.ndarray:
    try:
        return frame[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise RouteInputError(
            f"{source}: columns {list(columns)} must be numeric or bool ({exc}); {_CONVENTION}"
        ) from exc


def _check_unit_interval(quality: np.ndarray, models: Sequence[str], source: str) -> None:
    with np.errstate(invalid="ignore"):
        outside = (quality < 0) | (quality > 1)
    bad = [model for model, column in zip(models, outside.T, strict=True) if column.any()]
    if bad:
        raise RouteInputError(
            f"{source}: correctness columns {bad} hold values outside [0, 1]; {_CONVENTION}"
        )


def _prompt_text(value, source: str, row: int) -> str:
    if not isinstance(value, str):
        raise RouteInputError(f"{source}: row {row} has no prompt text (got {value!r})")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return value
        if isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return value
