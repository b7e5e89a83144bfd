"""Cross-validation that survives a stop: each finished fold is saved, and ``winnow search
train --resume RUN_DIR`` takes finished folds from the runs it continues instead of training
them again.

A fold's training is most of the job's time (4 to 6 minutes per fold of the shipped config on
2 cores) and everything it contributes to the report is its :class:`FoldResult`: held-out
rankings, the settings chosen on its inner split, rerank speed and training seconds. That is
saved as ``<run>/checkpoints/fold-K.json`` once the fold is done (written to a temporary file,
then renamed). Every random draw in search training is seeded per model, so a fold taken from
a checkpoint is the fold an uninterrupted run would have trained. A saved fold is used only when
its ``fit``, ``inner`` and ``test`` queries are the ones asked for now; the final models, trained
on every judged query after the folds, are always trained again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from winnow.common.runs import atomic_write_text, to_jsonable
from winnow.search.crossval import FoldResult
from winnow.search.folds import Fold

__all__ = ["FoldCheckpoints"]


class FoldCheckpoints:
    """Saves finished folds in ``run/checkpoints`` and finds them in ``runs`` (the chain of runs
    being continued, newest first)."""

    def __init__(self, run: str | Path, runs: Sequence[str | Path] = ()) -> None:
        self.folder = Path(run) / "checkpoints"
        self.runs = [Path(r) for r in runs]

    def save(self, result: FoldResult) -> Path:
        path = self.folder / f"fold-{result.fold.index}.json"
        record = {
            "fold": {
                "index": result.fold.index,
                "fit": result.fold.fit,
                "inner": result.fold.inner,
                "test": result.fold.test,
            },
            "rankings": result.rankings,
            "chosen": result.chosen,
            "items_per_s": result.items_per_s,
            "train_seconds": result.train_seconds,
        }
        atomic_write_text(path, json.dumps(to_jsonable(record)) + "\n")
        return path

    def load(self, fold: Fold) -> FoldResult | None:
        """The saved result of ``fold`` from the newest run that has it; None when none does
        (or a saved one was made for other queries: a changed config or data set)."""
        for run in self.runs:
            path = run / "checkpoints" / f"fold-{fold.index}.json"
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # absent or unreadable: train the fold
            saved = record.get("fold", {})
            if [saved.get(k) for k in ("fit", "inner", "test")] != [
                fold.fit,
                fold.inner,
                fold.test,
            ]:
                continue
            return FoldResult(
                fold,
                record["rankings"],
                record["chosen"],
                record["items_per_s"],
                record["train_seconds"],
            )
        return None
