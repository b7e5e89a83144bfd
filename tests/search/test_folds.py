"""Fold construction: every query is tested once, by models that never saw its labels."""

import pytest

from winnow.search.exceptions import SearchInputError
from winnow.search.folds import make_folds

IDS = [f"q{i:02d}" for i in range(43)]


def test_test_folds_partition_the_queries_in_near_equal_sizes():
    folds = make_folds(IDS, n_folds=5, seed=0)
    tested = [qid for fold in folds for qid in fold.test]
    assert sorted(tested) == IDS
    assert {len(fold.test) for fold in folds} <= {8, 9}


def test_no_query_reaches_its_own_folds_models_and_inner_split_is_disjoint():
    for fold in make_folds(IDS, n_folds=5, inner_fraction=0.2, seed=3):
        fit, inner, test = set(fold.fit), set(fold.inner), set(fold.test)
        assert not fit & test and not inner & test and not fit & inner
        assert fit | inner | test == set(IDS)
        assert set(fold.training) == fit | inner
        assert len(inner) == round(0.2 * (len(IDS) - len(test)))


def test_folds_depend_on_the_id_set_and_seed_only():
    forward = make_folds(IDS, seed=7)
    backward = make_folds(list(reversed(IDS)) + IDS[:5], seed=7)
    assert forward == backward
    assert make_folds(IDS, seed=8) != forward


def test_inner_splits_differ_between_folds():
    folds = make_folds(IDS, seed=0)
    assert len({tuple(fold.inner) for fold in folds}) == len(folds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_folds": 1}, "n_folds"),
        ({"inner_fraction": 0.0}, "inner_fraction"),
        ({"inner_fraction": 1.0}, "inner_fraction"),
        ({"n_folds": 30}, "n_folds <= 21"),
    ],
)
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(SearchInputError, match=message):
        make_folds(IDS, **kwargs)
