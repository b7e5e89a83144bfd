"""Query folds for cross-validated evaluation: every judged query is scored once, by models that
never saw its labels.

With 43 judged queries a single train/dev/test split leaves 8 test queries, too few to tell
systems apart. :func:`make_folds` deals the queries into ``n_folds`` folds; fold ``f``'s models
train on the other folds, its **inner** split (a seeded share of those training queries) is the
only place hyper-parameters may be chosen, and its **test** queries are scored once. Pooling the
test queries of all folds scores every judged query exactly once.

The split is by query, never by pair, and depends only on the set of ids, ``n_folds``,
``inner_fraction`` and the seed (not on input order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from winnow.search.exceptions import SearchInputError

__all__ = ["Fold", "make_folds"]


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: disjoint ``fit``, ``inner`` and ``test`` query-id lists.

    ``fit`` trains the fold's models, ``inner`` chooses their settings, ``test`` is scored.
    ``training`` (``fit + inner``) is every query whose labels the fold's models may use.
    """

    index: int
    fit: list[str]
    inner: list[str]
    test: list[str]

    @property
    def training(self) -> list[str]:
        return [*self.fit, *self.inner]


def make_folds(
    query_ids: Sequence[str], n_folds: int = 5, inner_fraction: float = 0.2, seed: int = 0
) -> list[Fold]:
    """Deal the distinct ``query_ids`` into ``n_folds`` test folds of near-equal size.

    Each fold's remaining queries are split again, seeded by ``(seed, fold)``: ``inner_fraction``
    of them (at least one) go to ``inner``, the rest to ``fit``.

    Returns ``n_folds`` folds whose ``test`` lists partition the ids.
    """
    if not isinstance(n_folds, Integral) or isinstance(n_folds, bool) or n_folds < 2:
        raise SearchInputError(f"n_folds must be an int >= 2; got {n_folds!r}")
    if not 0 < inner_fraction < 1:
        raise SearchInputError(
            f"inner_fraction must be in (0, 1), the share of a fold's training queries kept "
            f"for choosing settings; got {inner_fraction!r}"
        )
    ids = sorted(set(query_ids))
    if len(ids) < 2 * n_folds:
        raise SearchInputError(
            f"{len(ids)} queries cannot fill {n_folds} folds with training and inner queries "
            f"left; use n_folds <= {len(ids) // 2}"
        )
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    tests = [sorted(shuffled[f::n_folds]) for f in range(n_folds)]
    folds = []
    for index, test in enumerate(tests):
        held = set(test)
        rest = [qid for qid in ids if qid not in held]
        order = np.random.default_rng([seed, index]).permutation(len(rest))
        n_inner = max(1, round(inner_fraction * len(rest)))
        inner = sorted(rest[i] for i in order[:n_inner])
        fit = sorted(rest[i] for i in order[n_inner:])
        folds.append(Fold(index=index, fit=fit, inner=inner, test=test))
    return folds
