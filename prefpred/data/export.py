"""Writing tables back out: canonical parquet, and Kaggle arena CSV layouts (train or test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.folds import assign_folds
from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError
from prefpred.io import atomic_paths
from prefpred.labels import KAGGLE_COLUMNS


def _json_turns(series: pl.Series) -> pl.Series:
    return pl.Series(series.name, [json.dumps(t, ensure_ascii=False) for t in series.to_list()],
                     dtype=pl.String)


def kaggle_frame(table: PreferenceTable, *, with_labels: bool) -> pl.DataFrame:
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
    return pl.DataFrame(cols)


HOLDOUT_FILES = ("test.csv", "test_labelled.csv", "train.parquet")


def write_holdout(out_dir: str | Path, held: PreferenceTable,
                  train: PreferenceTable | None = None) -> list[Path]:
    """The held-out rows as a Kaggle test file (no labels) and its labelled twin, and the
    training table when given, written together (all or none) into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in HOLDOUT_FILES[:2 if train is None else 3]]
    with atomic_paths(*paths) as temps:
        kaggle_frame(held, with_labels=False).write_csv(temps[0])
        kaggle_frame(held, with_labels=True).write_csv(temps[1])
        if train is not None:
            train.df.write_parquet(temps[2])
    return paths


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
