"""Grouped, stratified K-fold assignment: the same prompt never sits on both sides of a split."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedGroupKFold

from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError


def assign_folds(table: PreferenceTable, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Fold index (0..n_folds-1) per row.

    Stratified by source x label (so every fold sees each source's label mix) and grouped by the
    table's ``group`` column (normalised prompt; the question for MT-Bench). Deterministic for a
    given table and seed: groups are relabelled in sorted order before splitting, so the
    assignment does not depend on row order.
    """
    if n_folds < 2:
        raise DataError(f"need at least 2 folds, got {n_folds}")
    groups = table.groups()
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise DataError(f"only {n_groups} distinct prompt groups for {n_folds} folds",
                        file=table.origin, column="group")
    y = table.labels()
    sources = table.column("source").to_numpy()
    strata = pl.Series([f"{s}|{label}" for s, label in zip(sources, y, strict=True)])
    _, strata_codes = np.unique(strata.to_numpy(), return_inverse=True)
    _, group_codes = np.unique(groups, return_inverse=True)
    # Sort rows by (group, id) so the splitter sees a canonical order.
    ids = np.asarray(table.ids)
    order = np.lexsort((ids, group_codes))
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(table), -1, dtype=np.int64)
    for k, (_, test_idx) in enumerate(splitter.split(np.zeros(len(order)), strata_codes[order],
                                                     group_codes[order])):
        folds[order[test_idx]] = k
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
