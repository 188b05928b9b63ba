import numpy as np
import polars as pl
import pytest

from prefpred.data.folds import assign_folds, check_folds, fold_split
from prefpred.errors import DataError


def test_folds_are_grouped_deterministic_and_stratified(shared_all):
    f1 = assign_folds(shared_all, 5, seed=42)
    f2 = assign_folds(shared_all, 5, seed=42)
    f3 = assign_folds(shared_all, 5, seed=7)
    assert (f1 == f2).all()
    assert (f1 != f3).any()
    check_folds(shared_all, f1)
    sizes = np.bincount(f1)
    assert sizes.min() > 0.15 * len(shared_all)
    # every fold sees every source, with a similar tie rate
    df = pl.DataFrame({"fold": f1, "source": shared_all.column("source"),
                       "tie": shared_all.labels() == 2})
    per = df.group_by("fold", "source").agg(pl.col("tie").mean(), pl.len())
    assert per.height == 5 * len(shared_all.sources())
    spread = per.group_by("source").agg((pl.col("tie").max() - pl.col("tie").min()).alias("d"))
    assert spread["d"].max() < 0.1


def test_mt_bench_questions_never_cross_folds(shared_all):
    folds = assign_folds(shared_all, 5, 42)
    df = pl.DataFrame({"id": shared_all.ids, "fold": folds})
    mt = df.filter(pl.col("id").str.starts_with("mtbench-q")).with_columns(
        q=pl.col("id").str.extract(r"mtbench-q(\d+)-"))
    assert mt.group_by("q").agg(pl.col("fold").n_unique())["fold"].max() == 1


def test_fold_assignment_does_not_depend_on_row_order(shared_all):
    folds = assign_folds(shared_all, 5, 42)
    perm = np.random.default_rng(0).permutation(len(shared_all))
    shuffled = assign_folds(shared_all.take(perm), 5, 42)
    assert (shuffled == folds[perm]).all()


def test_check_folds_catches_a_crossing_group(kaggle_table):
    folds = assign_folds(kaggle_table, 5, 0)
    groups = kaggle_table.groups()
    dup = pl.Series(groups).is_duplicated().to_numpy()
    i = int(np.flatnonzero(dup)[0])
    j = int(np.flatnonzero((groups == groups[i]) & (np.arange(len(groups)) != i))[0])
    folds[j] = (folds[i] + 1) % 5
    with pytest.raises(ValueError, match="crosses"):
        check_folds(kaggle_table, folds)


def test_fold_split_and_errors(kaggle_table):
    folds = assign_folds(kaggle_table, 4, 0)
    tr, va = fold_split(folds, 2)
    assert len(tr) + len(va) == len(kaggle_table) and not set(tr) & set(va)
    with pytest.raises(DataError):
        assign_folds(kaggle_table, 1)
    with pytest.raises(DataError, match="distinct prompt groups"):
        assign_folds(kaggle_table.take(np.arange(3)), 5)
