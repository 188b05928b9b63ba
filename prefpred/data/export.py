"""Writing tables back out: canonical parquet, and Kaggle arena CSV layouts (train or test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.folds import assign_folds
from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError
from prefpred.io import atomic_path
from prefpred.labels import KAGGLE_COLUMNS


def _json_turns(series: pl.Series) -> pl.Series:
    return pl.Series(series.name, [json.dumps(t, ensure_ascii=False) for t in series.to_list()],
                     dtype=pl.String)


def write_kaggle_csv(table: PreferenceTable, path: str | Path, *, with_labels: bool) -> Path:
    """Kaggle LMSYS layout: ``id,[model_a,model_b,]prompt,response_a,response_b`` and, with
    labels, the one-hot ``winner_*`` columns. Turns are JSON lists, as in the real files."""
    df = table.df
    cols: dict[str, pl.Series] = {"id": df["id"]}
    if with_labels:
        cols["model_a"] = df["model_a"].fill_null("")
        cols["model_b"] = df["model_b"].fill_null("")
    for name in ("prompt", "response_a", "response_b"):
        cols[name] = _json_turns(df[name])
    if with_labels:
        y = table.require_labels("a labelled Kaggle file")
        for i, name in enumerate(KAGGLE_COLUMNS):
            cols[name] = pl.Series(name, (y == i).astype(np.int64))
    out = pl.DataFrame(cols)
    with atomic_path(path) as tmp:
        out.write_csv(tmp)
    return Path(path)


def split_holdout(table: PreferenceTable, *, source: str | None, fraction: float, seed: int
                  ) -> tuple[PreferenceTable, PreferenceTable]:
    """Split off whole prompt groups (of one source, if given) as a held-out test set.

    Uses the same grouped folds as CV with ``round(1 / fraction)`` folds and holds out fold 0, so
    no prompt is on both sides.
    """
    if not 0 < fraction < 1:
        raise DataError(f"holdout fraction {fraction} is not in (0, 1)")
    n_folds = max(2, round(1 / fraction))
    folds = assign_folds(table, n_folds, seed)
    held = folds == 0
    if source is not None:
        if source not in table.sources():
            raise DataError(f"source {source!r} not in the table ({table.sources()})")
        held = held & (table.column("source").to_numpy() == source)
    # Training keeps every row whose prompt group is not held out (other sources included).
    groups = table.groups()
    train_mask = ~np.isin(groups, np.unique(groups[held]))
    return table.filter(train_mask), table.filter(held)
