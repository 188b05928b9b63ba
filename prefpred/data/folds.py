"""Folds: the one splitter and the one out-of-fold loop.

- :func:`split_folds` assigns a fold to every row from plain arrays: stratified by a key,
  grouped (rows of a group always share a fold), in a canonical row order when asked.
  :func:`assign_folds` applies it to a table (groups are normalised prompts, the question for
  MT-Bench; strata are source x label); inner splits and reward comparisons use it too.
- :func:`out_of_fold` is "fit on the other folds, predict this one": every out-of-fold
  prediction in prefpred (cross-validation, tuning, calibration, stacking, tie models) goes
  through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError
from prefpred.labels import N_CLASSES


def split_folds(strata: np.ndarray, groups: np.ndarray | None = None, n_folds: int = 5,
                seed: int = 42, *, order: np.ndarray | None = None) -> np.ndarray:
    """Fold index (0..n_folds-1) per row.

    Stratified by ``strata`` (any labels: class, source x class...) and, when ``groups`` is
    given, grouped by it with scikit-learn's ``StratifiedGroupKFold`` (else ``StratifiedKFold``),
    shuffled with ``seed``. ``order`` (a permutation of the rows) is the order the splitter
    sees: a canonical order makes the assignment independent of the row order of the input.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    strata = np.asarray(strata)
    n = len(strata)
    order = np.arange(n) if order is None else np.asarray(order)
    _, strata_codes = np.unique(strata, return_inverse=True)
    folds = np.full(n, -1, dtype=np.int64)
    if groups is None:
        split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(
            np.zeros(n), strata_codes[order])
    else:
        _, group_codes = np.unique(np.asarray(groups), return_inverse=True)
        split = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(n), strata_codes[order], group_codes[order])
    for k, (_, test_idx) in enumerate(split):
        folds[order[test_idx]] = k
    return folds


def canonical_order(groups: np.ndarray, ids: Iterable[str]) -> np.ndarray:
    """Rows sorted by (group, id): the same set of rows gives the same order, however shuffled."""
    _, group_codes = np.unique(np.asarray(groups), return_inverse=True)
    return np.lexsort((np.asarray(list(ids)), group_codes))


def assign_folds(table: PreferenceTable, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Fold index (0..n_folds-1) per row of a table.

    Stratified by source x label (so every fold sees each source's label mix) and grouped by the
    table's ``group`` column (normalised prompt; the question for MT-Bench). Deterministic for a
    given table and seed, whatever its row order.
    """
    if n_folds < 2:
        raise DataError(f"need at least 2 folds, got {n_folds}")
    groups = table.groups()
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise DataError(f"only {n_groups} distinct prompt groups for {n_folds} folds",
                        file=table.origin, column="group")
    sources = table.column("source").to_numpy()
    strata = np.array([f"{s}|{label}" for s, label in zip(sources, table.labels(), strict=True)])
    folds = split_folds(strata, groups, n_folds, seed, order=canonical_order(groups, table.ids))
    check_folds(table, folds)
    return folds


def check_folds(table: PreferenceTable, folds: np.ndarray) -> None:
    """Raise if a row has no fold or any group appears in more than one fold."""
    folds = np.asarray(folds)
    if len(folds) != len(table):
        raise ValueError(f"{len(folds)} fold ids for {len(table)} rows")
    if (folds < 0).any():
        raise ValueError("some rows have no fold")
    df = pl.DataFrame({"group": table.groups(), "fold": folds})
    crossing = df.group_by("group").agg(pl.col("fold").n_unique().alias("n")).filter(pl.col("n") > 1)
    if crossing.height:
        raise ValueError(f"group {crossing['group'][0]!r} crosses {crossing['n'][0]} folds")


def fold_split(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of fold ``k``."""
    folds = np.asarray(folds)
    return np.flatnonzero(folds != k), np.flatnonzero(folds == k)


def iter_folds(folds: np.ndarray, only: Iterable[int] | None = None
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(k, train indices, held-out indices)`` for every fold id (sorted), or those in ``only``."""
    fold_ids = np.unique(np.asarray(folds)).tolist()
    wanted = None if only is None else set(only)
    for k in fold_ids:
        if wanted is None or k in wanted:
            yield (k, *fold_split(folds, k))


FitPredict = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def out_of_fold(folds: np.ndarray, fit_predict: FitPredict, *, width: int = N_CLASSES,
                only: Iterable[int] | None = None,
                after_fold: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Out-of-fold predictions: ``fit_predict(k, train_idx, held_idx)`` fits on the rows of the
    other folds and returns predictions ``(len(held_idx), width)`` for fold ``k``'s rows.

    Returns ``(n, width)`` in row order; rows of folds left out by ``only`` are NaN.
    ``after_fold(k, out)`` sees the predictions so far after each fold (progress, pruning).
    """
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        raise DataError("out-of-fold prediction needs at least two folds", column="fold")
    out = np.full((len(folds), width), np.nan)
    for k, train_idx, held_idx in iter_folds(folds, only):
        out[held_idx] = fit_predict(k, train_idx, held_idx)
        if after_fold is not None:
            after_fold(k, out)
    return out
