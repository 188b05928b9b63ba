"""Reading reward-score files and writing three-way probability files.

A scores file (CSV, TSV, JSON lines or parquet) has one row per pair: ``id``, ``reward_a``,
``reward_b`` and, for fitting, a label: a ``label`` (or ``winner``) column holding A / B / tie in
any case, model_a / model_b, or 0 / 1 / 2; or the Kaggle one-hot columns ``winner_model_a``,
``winner_model_b``, ``winner_tie``. Optional: ``group`` (fold groups, e.g. the prompt), ``weight``
and numeric feature columns named on the command line. Every bad cell is reported as one line
naming the file, the row (1-based, header excluded) and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.mapped import labels_from_column, labels_from_onehot
from prefpred.data.raw import read_records
from prefpred.errors import DataError
from prefpred.io import atomic_path
from prefpred.labels import KAGGLE_COLUMNS

LABEL_COLUMNS = ("label", "winner")


@dataclass
class RewardScores:
    """The parsed contents of a scores file."""

    file: Path
    ids: list[str]
    reward_a: np.ndarray
    reward_b: np.ndarray
    y: np.ndarray | None  # class indices, None when the file has no labels
    groups: np.ndarray | None
    weights: np.ndarray | None
    features: np.ndarray  # (n, len(feature_names))
    feature_names: list[str]

    @property
    def margin(self) -> np.ndarray:
        return self.reward_a - self.reward_b

    def __len__(self) -> int:
        return len(self.ids)


def _numeric(raw: pl.DataFrame, column: str, file: Path, *, what: str = "number",
             allow_negative: bool = True) -> np.ndarray:
    if column not in raw.columns:
        raise DataError(f"missing column '{column}'; found {raw.columns}", file=file,
                        column=column)
    s = raw[column]
    num = s.cast(pl.Float64, strict=False) if s.dtype != pl.Float64 else s
    bad = num.is_null() | ~num.is_finite()
    if not allow_negative:
        bad = bad | (num < 0)
    if bad.any():
        row = int(bad.arg_true()[0]) + 1
        value = s[row - 1]
        reason = "missing" if value is None else f"{value!r} is not a finite {what}"
        raise DataError(f"{column} {reason}", file=file, row=row, column=column)
    return num.to_numpy().astype(np.float64)


def _ids(raw: pl.DataFrame, file: Path) -> list[str]:
    if "id" not in raw.columns:
        raise DataError(f"missing column 'id'; found {raw.columns}", file=file, column="id")
    s = raw["id"]
    if s.dtype.is_float() and (s.drop_nulls() == s.drop_nulls().round()).all():
        s = s.cast(pl.Int64)
    s = s.cast(pl.String).str.strip_chars()
    blank = s.is_null() | (s == "")
    if blank.any():
        raise DataError("id is missing", file=file, row=int(blank.arg_true()[0]) + 1, column="id")
    dup = s.is_duplicated()
    if dup.any():
        rows = dup.arg_true()
        first = s[int(rows[0])]
        second = int(s.eq(first).arg_true()[1]) + 1
        raise DataError(f"duplicate id {first!r} (first at row {int(rows[0]) + 1})", file=file,
                        row=second, column="id")
    return s.to_list()


def read_scores(path: str | Path, *, require_labels: bool = False,
                features: Sequence[str] = ()) -> RewardScores:
    """Read and check a scores file; labels are required for fitting (``require_labels``)."""
    file = Path(path)
    raw = read_records(file)
    ids = _ids(raw, file)
    reward_a = _numeric(raw, "reward_a", file)
    reward_b = _numeric(raw, "reward_b", file)
    y = None
    label_col = next((c for c in LABEL_COLUMNS if c in raw.columns), None)
    if label_col is not None:
        y = labels_from_column(raw[label_col], None, file, label_col).to_numpy().astype(np.int64)
    else:
        onehot = labels_from_onehot(raw, KAGGLE_COLUMNS, file)
        if onehot is not None:
            y = onehot.to_numpy().astype(np.int64)
    if y is None and require_labels:
        raise DataError("no labels to fit on", file=file, column="label",
                        fix="add a 'label' column (A / B / tie, or 0 / 1 / 2) or the one-hot "
                            f"columns {list(KAGGLE_COLUMNS)}")
    groups = None
    if "group" in raw.columns:
        g = raw["group"].cast(pl.String)
        if g.is_null().any():
            raise DataError("group is missing", file=file, row=int(g.is_null().arg_true()[0]) + 1,
                            column="group")
        groups = g.to_numpy()
    weights = (_numeric(raw, "weight", file, what="non-negative weight", allow_negative=False)
               if "weight" in raw.columns else None)
    feats = [_numeric(raw, name, file) for name in features]
    x = np.column_stack(feats) if feats else np.zeros((raw.height, 0))
    return RewardScores(file=file, ids=ids, reward_a=reward_a, reward_b=reward_b, y=y,
                        groups=groups, weights=weights, features=x, feature_names=list(features))


def write_frame(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a frame atomically as CSV, or parquet when the name ends in .parquet / .pq."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.write_parquet(tmp)
        elif path.suffix.lower() == ".csv":
            frame.write_csv(tmp)
        else:
            raise DataError(f"unknown output type {path.suffix!r}", file=path,
                            fix="use .csv or .parquet")
    return path
