"""Writing competition submission files (atomically, with provenance) and validating them
the way the graders do."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.competitions import Competition
from prefpred.data.table import PreferenceTable
from prefpred.errors import SubmissionError
from prefpred.io import atomic_path, write_json_atomic
from prefpred.labels import CLASSES

SUM_TOLERANCE = 1e-6


def provenance_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def _class_indices(competition: Competition) -> list[int]:
    return [CLASSES.index(c) for c in competition.classes]


def submission_frame(ids: list[str], proba: np.ndarray, competition: Competition) -> pl.DataFrame:
    """The submission as a frame, in the competition's layout and the given id order."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (len(ids), len(CLASSES)):
        raise ValueError(f"probabilities of shape {proba.shape} for {len(ids)} ids")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    layout = competition.submission
    keep = proba[:, _class_indices(competition)]
    if layout.kind == "probabilities":
        keep = keep / keep.sum(1, keepdims=True)
        cols = {layout.id_column: pl.Series(ids, dtype=pl.String)}
        for name, values in zip(layout.columns[1:], keep.T, strict=True):
            cols[name] = pl.Series(values, dtype=pl.Float64)
        return pl.DataFrame(cols)
    names = [layout.values.get(c, c) for c in competition.classes]
    winner = [names[i] for i in keep.argmax(1)]
    return pl.DataFrame({layout.id_column: pl.Series(ids, dtype=pl.String),
                         layout.columns[1]: winner})


def write_submission(
    path: str | Path,
    test: PreferenceTable,
    proba: np.ndarray,
    competition: Competition,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write, validate, then rename into place: a bad or interrupted write leaves nothing.

    The provenance JSON (``<file>.provenance.json``) records what made the file.
    """
    path = Path(path)
    frame = submission_frame(test.ids, proba, competition)
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)
        validate_submission(tmp, competition, test_ids=test.ids, display_name=str(path))
        prov = {
            "file": path.name,
            "competition": competition.name,
            "rows": frame.height,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **(provenance or {}),
        }
        write_json_atomic(provenance_path(path), prov)
    return path


@dataclass
class ValidationReport:
    rows: int
    columns: list[str]

    def __str__(self) -> str:
        return f"valid: {self.rows} rows, columns {self.columns}"


def _read_submission(path: Path, display: str) -> pl.DataFrame:
    if not path.exists():
        raise SubmissionError("file not found", file=display)
    if path.stat().st_size == 0:
        raise SubmissionError("file is empty", file=display)
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("file is not valid UTF-8", file=display) from None
    try:
        return pl.read_csv(path, infer_schema=False)
    except Exception as err:  # noqa: BLE001
        raise SubmissionError(f"cannot be parsed as CSV ({str(err).splitlines()[0]})",
                              file=display) from None


def _check_ids(sub_ids: list[str | None], test_ids: list[str], display: str, id_col: str) -> None:
    test_set = set(test_ids)
    seen: set[str] = set()
    for row, value in enumerate(sub_ids, start=1):
        if value is None or value.strip() == "":
            raise SubmissionError("id is empty", file=display, row=row, column=id_col)
        if value in seen:
            raise SubmissionError(f"duplicate id {value!r}", file=display, row=row, column=id_col)
        seen.add(value)
        if value not in test_set:
            raise SubmissionError(f"id {value!r} is not in the test file", file=display, row=row,
                                  column=id_col)
    missing = [i for i in test_ids if i not in seen]
    if missing:
        test_row = test_ids.index(missing[0]) + 1
        raise SubmissionError(
            f"{len(missing)} test id(s) missing, first {missing[0]!r} (test row {test_row})",
            file=display, row=len(sub_ids) + 1, column=id_col,
            fix="write one row per test id",
        )
    for row, (value, expected) in enumerate(zip(sub_ids, test_ids, strict=True), start=1):
        if value != expected:
            raise SubmissionError(f"id {value!r} is out of order, the test file has {expected!r}"
                                  " here", file=display, row=row, column=id_col,
                                  fix="write rows in the test file's order")


def validate_submission(
    path: str | Path,
    competition: Competition,
    *,
    test: PreferenceTable | None = None,
    test_ids: list[str] | None = None,
    display_name: str | None = None,
) -> ValidationReport:
    """Check what the grader checks; raise :class:`SubmissionError` at the first bad row."""
    path = Path(path)
    display = display_name or str(path)
    if test_ids is None:
        if test is None:
            raise ValueError("pass the test table or its ids")
        test_ids = test.ids
    layout = competition.submission
    df = _read_submission(path, display)
    expected = list(layout.columns)
    for col in expected:
        if col not in df.columns:
            raise SubmissionError(f"missing column; expected columns {expected}", file=display,
                                  column=col)
    extra = [c for c in df.columns if c not in expected]
    if extra:
        raise SubmissionError(f"unexpected column; expected columns {expected}", file=display,
                              column=extra[0])
    if df.columns != expected:
        raise SubmissionError(f"columns {df.columns} are not in the order {expected}",
                              file=display)
    if df.height == 0:
        raise SubmissionError("no rows", file=display)
    _check_ids(df[layout.id_column].to_list(), test_ids, display, layout.id_column)

    if layout.kind == "label":
        allowed = [layout.values.get(c, c) for c in competition.classes]
        col = layout.columns[1]
        for row, value in enumerate(df[col].to_list(), start=1):
            if value not in allowed:
                raise SubmissionError(f"value {value!r} is not one of {allowed}", file=display,
                                      row=row, column=col)
        return ValidationReport(df.height, df.columns)

    prob_cols = expected[1:]
    values = np.empty((df.height, len(prob_cols)))
    for j, col in enumerate(prob_cols):
        parsed = df[col].cast(pl.Float64, strict=False)
        bad = parsed.is_null()
        if bad.any():
            row = int(bad.arg_true()[0]) + 1
            raise SubmissionError(f"value {df[col][row - 1]!r} is not a number", file=display,
                                  row=row, column=col)
        values[:, j] = parsed.to_numpy()
    for j, col in enumerate(prob_cols):
        v = values[:, j]
        bad = ~np.isfinite(v)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise SubmissionError("value is NaN or infinite", file=display, row=row, column=col)
        bad = (v < 0) | (v > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise SubmissionError(f"probability {v[row - 1]} is outside [0, 1]", file=display,
                                  row=row, column=col)
    total = values.sum(1)
    bad = np.abs(total - 1.0) > SUM_TOLERANCE
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise SubmissionError(
            f"probabilities sum to {total[row - 1]:.9g}, not 1 (tolerance {SUM_TOLERANCE:g})",
            file=display, row=row, column="+".join(prob_cols),
        )
    return ValidationReport(df.height, df.columns)


def read_submission_proba(path: str | Path, competition: Competition) -> tuple[list[str], np.ndarray]:
    """Ids and (n, 3) probabilities of a probabilities-layout submission (for scoring)."""
    df = pl.read_csv(path, infer_schema=False)
    layout = competition.submission
    proba = np.zeros((df.height, len(CLASSES)))
    for cls, col in zip(competition.classes, layout.columns[1:], strict=True):
        proba[:, CLASSES.index(cls)] = df[col].cast(pl.Float64).to_numpy()
    return df[layout.id_column].to_list(), proba
