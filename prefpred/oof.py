"""The out-of-fold file (``oof.parquet``): write, read, check, join.

One row per training row that a cross-validation predicted::

    id (text) | source | fold (int) | label (class index) | logit_A | logit_B | logit_TIE

``logit_*`` follow :data:`prefpred.labels.LOGIT_COLUMNS`. Every stage downstream of a model
(stacking, calibration, reward calibration, reports) reads base models through :func:`join_oof`,
which joins several models' files by id and checks that they share rows, labels and folds: a
row's logits were then all predicted by models that never saw it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.io import atomic_path
from prefpred.labels import LOGIT_COLUMNS, N_CLASSES

OOF_FILE = "oof.parquet"
KEY_COLUMNS = ("id", "fold", "label")


def oof_frame(table: PreferenceTable, logits: np.ndarray, folds: np.ndarray) -> pl.DataFrame:
    """Out-of-fold output as a frame: id, source, fold, label, one logit column per class."""
    frame = pl.DataFrame({
        "id": table.ids,
        "source": table.column("source"),
        "fold": np.asarray(folds).astype(np.int64),
        "label": table.column("label"),
    })
    return frame.with_columns([pl.Series(c, logits[:, i]) for i, c in enumerate(LOGIT_COLUMNS)])


def write_oof(path: str | Path, frame: pl.DataFrame) -> Path:
    """Write an out-of-fold frame atomically (checked first: a bad frame is never written)."""
    check_oof(frame, Path(path))
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return Path(path)


def check_oof(frame: pl.DataFrame, file: Path | None = None,
              what: str = "an out-of-fold frame") -> pl.DataFrame:
    """Check an out-of-fold frame (columns, unique ids, finite logits, labels in range); return it
    with ``id`` as text. Errors name the file, row and column."""
    missing = [c for c in (*KEY_COLUMNS, *LOGIT_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing} of {what}", file=file, column=missing[0])
    frame = frame.with_columns(pl.col("id").cast(pl.String))
    repeat = ~frame["id"].is_first_distinct()
    if repeat.any():
        row = int(repeat.arg_true()[0]) + 1
        raise DataError(f"duplicate id {frame['id'][row - 1]!r}", file=file, row=row, column="id")
    for col in ("fold", "label", *LOGIT_COLUMNS):
        s = frame[col]
        bad = s.is_null()
        if s.dtype.is_float():
            bad = bad | ~s.is_finite()
        if bad.any():
            raise DataError("missing or non-finite value", file=file,
                            row=int(bad.arg_true()[0]) + 1, column=col)
    y = frame["label"].to_numpy().astype(np.int64)
    if ((y < 0) | (y >= N_CLASSES)).any():
        row = int(np.flatnonzero((y < 0) | (y >= N_CLASSES))[0]) + 1
        raise DataError(f"label {y[row - 1]} is not 0, 1 or 2", file=file, row=row,
                        column="label")
    return frame


def read_oof(value: str | Path | pl.DataFrame, what: str = "an out-of-fold frame"
             ) -> tuple[pl.DataFrame, Path | None]:
    """A checked out-of-fold frame from a frame, an ``oof.parquet`` or its run folder, and the
    file it came from."""
    if isinstance(value, pl.DataFrame):
        return check_oof(value, None, what), None
    path = Path(value)
    if path.is_dir():
        path = path / OOF_FILE
    if not path.exists():
        raise DataError("out-of-fold file not found", file=path,
                        fix="run `prefpred cv` for that model first")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise DataError(f"not a parquet file ({str(err).splitlines()[0]})", file=path) from None
    return check_oof(frame, path, what), path


def align_by_id(frame: pl.DataFrame, ids: Sequence[str], *, missing: str,
                file: str | Path | None = None) -> pl.DataFrame:
    """The rows of ``frame`` (which has an ``id`` column) in the order of ``ids``. An id that
    ``frame`` lacks is a :class:`DataError` reading ``id '<id>' <missing>``."""
    if "id" not in frame.columns:
        raise DataError("no 'id' column to join on", file=file, column="id")
    frame = frame.with_columns(pl.col("id").cast(pl.String), pl.lit(True).alias("__present"))
    joined = pl.DataFrame({"id": pl.Series(list(ids), dtype=pl.String)}).join(
        frame, on="id", how="left", maintain_order="left")
    absent = joined["__present"].is_null()
    if absent.any():
        i = int(absent.arg_true()[0])
        raise DataError(f"id {joined['id'][i]!r} {missing}", file=file, column="id")
    return joined.drop("__present")


@dataclass
class OOFData:
    """Out-of-fold logits of one or more base models joined by id, with labels, folds, sources
    and optional numeric features (rows in the order of the first model's file)."""

    ids: list[str]
    y: np.ndarray
    folds: np.ndarray
    sources: np.ndarray
    logits: dict[str, np.ndarray]  # base model name -> (n, 3), same row order as ids
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    feature_names: list[str] = field(default_factory=list)
    sample_weight: np.ndarray | None = None
    #: (n, 3) soft targets (vote shares, ...), NaN rows where the label is the target; stackers
    #: fit on them by row expansion (:meth:`prefpred.stack.Stacker.fit_data`)
    soft: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.features.size == 0:
            self.features = np.zeros((len(self.ids), 0))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def models(self) -> list[str]:
        return list(self.logits)

    def take(self, mask: np.ndarray) -> OOFData:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return OOFData(
            ids=[self.ids[i] for i in idx], y=self.y[idx], folds=self.folds[idx],
            sources=self.sources[idx], logits={k: v[idx] for k, v in self.logits.items()},
            features=self.features[idx], feature_names=list(self.feature_names),
            sample_weight=None if self.sample_weight is None else self.sample_weight[idx],
            soft=None if self.soft is None else self.soft[idx])


def join_oof(
    oofs: Mapping[str, str | Path | pl.DataFrame],
    features: pl.DataFrame | None = None,
    feature_columns: Sequence[str] | None = None,
    sample_weight: np.ndarray | None = None,
) -> OOFData:
    """Join the out-of-fold frames of base models (name -> frame, file or run folder) by id.

    The first model's rows set the order. Every model must cover the same ids with the same
    labels and the same fold ids; ``features`` (a frame with ``id``) must cover them too.
    """
    if not oofs:
        raise ConfigError("at least one base model's out-of-fold logits are needed")
    names = list(oofs)
    frames = {name: read_oof(oofs[name], f"the out-of-fold logits of {name!r}")
              for name in names}
    base, _ = frames[names[0]]
    ids = base["id"]
    joined = base.select("id", *(["source"] if "source" in base.columns else []), *KEY_COLUMNS[1:])
    logits = {}
    for name, (frame, file) in frames.items():
        if frame.height != base.height:
            extra = frame.filter(~pl.col("id").is_in(ids.implode()))["id"]
            if extra.len():
                raise DataError(f"id {extra[0]!r} is not among the ids of {names[0]!r}",
                                file=file, column="id")
        merged = align_by_id(frame.select(
            "id", *[pl.col(c).alias(f"__{c}") for c in (*KEY_COLUMNS[1:], *LOGIT_COLUMNS)]),
            ids.to_list(), missing=f"of {names[0]!r} has no out-of-fold logits in {name!r}",
            file=file)
        for col, what in (("fold", "fold ids (all base models must share the CV folds)"),
                          ("label", "labels")):
            differ = joined[col] != merged[f"__{col}"]
            if differ.any():
                i = int(differ.arg_true()[0])
                raise DataError(f"id {ids[i]!r}: {what} differ from {names[0]!r}'s "
                                f"({merged[f'__{col}'][i]} vs {joined[col][i]})", file=file,
                                column=col)
        logits[name] = merged.select([f"__{c}" for c in LOGIT_COLUMNS]).to_numpy().astype(float)
    x = np.zeros((base.height, 0))
    names_x: list[str] = []
    if features is not None:
        cols = list(feature_columns or [c for c in features.columns if c != "id"])
        missing = [c for c in cols if c not in features.columns]
        if missing:
            raise DataError(f"feature column(s) {missing} not found", column=missing[0])
        feat = align_by_id(features.select("id", *cols), ids.to_list(), missing="has no features")
        for c in cols:
            s = feat[c].cast(pl.Float64, strict=False)
            bad = s.is_null() | ~s.is_finite()
            if bad.any():
                i = int(bad.arg_true()[0])
                raise DataError(f"feature missing or not a finite number for id {ids[i]!r}",
                                row=i + 1, column=c)
        x = feat.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()
        names_x = cols
    sources = (joined["source"].to_numpy() if "source" in joined.columns
               else np.full(base.height, "all", dtype=object))
    return OOFData(ids=ids.to_list(), y=joined["label"].to_numpy().astype(np.int64),
                   folds=joined["fold"].to_numpy().astype(np.int64), sources=sources,
                   logits=logits, features=x, feature_names=names_x,
                   sample_weight=sample_weight)
