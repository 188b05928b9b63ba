"""Writing probability files (the one writer: submissions, predictions, calibrated rewards) and
validating submissions the way the competition graders do.

Every probability prefpred writes goes through :func:`write_submission` or
:func:`write_probabilities`, which pass it through
:func:`prefpred.probabilities.finalise_probabilities`: finite, inside (0, 1), rows summing to 1.
A submission and its provenance (``<file>.provenance.json``) appear together or not at all.

:func:`validate_submission` follows Kaggle's LMSYS grader and mle-bench's
(``mlebench/competitions/lmsys-chatbot-arena/grade.py``): rows are matched by id (any order; the
grader sorts both files by id), the id column and each class column must be present (in any
order; a column nobody asked for is refused, as Kaggle does; column names are exact), every
test id exactly once, values numbers in [0, 1], each row summing to 1 after rounding to 6
decimals. Whitespace around ids and numbers and blank lines are ignored, as pandas' CSV reader
does; ids are compared after stripping whitespace in both files.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.competitions import Competition
from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError, SubmissionError
from prefpred.io import atomic_path, atomic_paths
from prefpred.labels import CLASSES, KAGGLE_COLUMNS, LOGIT_COLUMNS, N_CLASSES
from prefpred.probabilities import finalise_probabilities

#: A row's probabilities must round to a sum of exactly 1 at this many decimals (mle-bench).
SUM_DECIMALS = 6


def provenance_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def _class_indices(competition: Competition) -> list[int]:
    return [CLASSES.index(c) for c in competition.classes]


def _finalise(proba: np.ndarray, ids: Sequence[str], k: int, where: str) -> np.ndarray:
    try:
        return finalise_probabilities(proba, len(ids), k)
    except ValueError as err:
        raise SubmissionError(f"refusing to write {where}: {err}") from None


def submission_frame(ids: list[str], proba: np.ndarray, competition: Competition) -> pl.DataFrame:
    """The submission as a frame, in the competition's layout and the given id order."""
    proba = _finalise(proba, ids, N_CLASSES, "the submission")
    layout = competition.submission
    keep = proba[:, _class_indices(competition)]
    if layout.kind == "probabilities":
        keep = finalise_probabilities(keep)
        cols = {layout.id_column: pl.Series(ids, dtype=pl.String)}
        for name, values in zip(layout.columns[1:], keep.T, strict=True):
            cols[name] = pl.Series(values, dtype=pl.Float64)
        return pl.DataFrame(cols)
    names = [layout.values.get(c, c) for c in competition.classes]
    winner = [names[i] for i in keep.argmax(1)]
    return pl.DataFrame({layout.id_column: pl.Series(ids, dtype=pl.String),
                         layout.columns[1]: winner})


def stage_submission(tmp: Path, tmp_provenance: Path, path: Path, test: PreferenceTable,
                     proba: np.ndarray, competition: Competition,
                     provenance: dict[str, Any] | None = None) -> int:
    """Write a submission and its provenance into temporary files (``path`` is where they will
    be), validating the submission as the grader would. Returns the number of rows."""
    import json

    frame = submission_frame(test.ids, proba, competition)
    prov = {
        "file": path.name,
        "competition": competition.name,
        "rows": frame.height,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **(provenance or {}),
    }
    frame.write_csv(tmp)
    validate_submission(tmp, competition, test_ids=test.ids, display_name=str(path))
    tmp_provenance.write_text(json.dumps(prov, indent=2, sort_keys=True, default=str) + "\n",
                              encoding="utf-8")
    return frame.height


def write_submission(
    path: str | Path,
    test: PreferenceTable,
    proba: np.ndarray,
    competition: Competition,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write, validate, then rename the submission and its provenance JSON into place together:
    a bad or interrupted write leaves neither (and an older pair stays as it was)."""
    path = Path(path)
    with atomic_paths(path, provenance_path(path)) as (tmp, tmp_prov):
        stage_submission(tmp, tmp_prov, path, test, proba, competition, provenance)
    return path


def write_probabilities(path: str | Path, ids: Sequence[str], proba: np.ndarray, *,
                        logits: np.ndarray | None = None,
                        columns: Sequence[str] = KAGGLE_COLUMNS) -> Path:
    """id and one probability column per class (Kaggle's names by default), and optionally the
    logits, as CSV or parquet (by the file's suffix), written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SubmissionError(f"unknown output type {path.suffix!r}", file=path,
                              fix="use .csv or .parquet")
    proba = _finalise(proba, ids, len(columns), str(path))
    frame = pl.DataFrame({"id": pl.Series(list(ids), dtype=pl.String)})
    if logits is not None:
        frame = frame.with_columns([pl.Series(c, np.asarray(logits)[:, i])
                                    for i, c in enumerate(LOGIT_COLUMNS)])
    frame = frame.with_columns([pl.Series(c, proba[:, i]) for i, c in enumerate(columns)])
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp)
    return path


@dataclass
class ValidationReport:
    rows: int
    columns: list[str]

    def __str__(self) -> str:
        return f"valid: {self.rows} rows, columns {self.columns}"


def read_submission(path: Path, display: str | None = None) -> pl.DataFrame:
    """A CSV's cells as text, whitespace around values stripped (not around column names, as
    pandas reads them), blank lines dropped; located errors for an empty, non-UTF-8 or
    unparsable file and for a repeated column name."""
    from prefpred.data.raw import csv_header

    display = display or str(path)
    if not path.exists():
        raise SubmissionError("file not found", file=display)
    if path.is_dir():
        raise SubmissionError("is a folder, expected a CSV file", file=display)
    if path.stat().st_size == 0:
        raise SubmissionError("file is empty", file=display)
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("file is not valid UTF-8", file=display) from None
    try:
        csv_header(path, display=display)
    except DataError as err:
        raise SubmissionError(err.args[0]) from None
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as err:  # noqa: BLE001 - polars raises several types for a malformed CSV
        raise SubmissionError(f"cannot be parsed as CSV ({str(err).splitlines()[0]})",
                              file=display) from None
    df = df.with_columns(pl.all().str.strip_chars())
    blank = pl.all_horizontal(pl.all().is_null() | (pl.all() == ""))
    return df.filter(~blank)


def _check_ids(sub_ids: list[str | None], test_ids: list[str], display: str, id_col: str) -> None:
    """Every test id exactly once, no other id, in any order."""
    test_set = set(test_ids)
    seen: dict[str, int] = {}
    for row, value in enumerate(sub_ids, start=1):
        if value is None or value == "":
            raise SubmissionError("id is empty", file=display, row=row, column=id_col)
        if value in seen:
            raise SubmissionError(f"duplicate id {value!r} (first at row {seen[value]})",
                                  file=display, row=row, column=id_col)
        seen[value] = row
        if value not in test_set:
            raise SubmissionError(f"id {value!r} is not in the test file", file=display, row=row,
                                  column=id_col)
    missing = [i for i in test_ids if i not in seen]
    if missing:
        test_row = test_ids.index(missing[0]) + 1
        raise SubmissionError(
            f"{len(missing)} test id(s) missing, first {missing[0]!r} (test row {test_row})",
            file=display, column=id_col, fix="write one row per test id",
        )


def validate_submission(
    path: str | Path,
    competition: Competition,
    *,
    test: PreferenceTable | None = None,
    test_ids: list[str] | None = None,
    display_name: str | None = None,
) -> ValidationReport:
    """Check what the graders check (see the module docstring); raise
    :class:`SubmissionError` at the first bad row."""
    path = Path(path)
    display = display_name or str(path)
    if test_ids is None:
        if test is None:
            raise ValueError("pass the test table or its ids")
        test_ids = test.ids
    test_ids = [str(i).strip() for i in test_ids]
    layout = competition.submission
    df = read_submission(path, display)
    expected = list(layout.columns)
    for col in expected:
        if col not in df.columns:
            raise SubmissionError(f"missing column; expected columns {expected}", file=display,
                                  column=col)
    extra = [c for c in df.columns if c not in expected]
    if extra:
        raise SubmissionError(f"unexpected column; expected columns {expected}", file=display,
                              column=extra[0])
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
        return ValidationReport(df.height, expected)

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
    bad = np.round(total, SUM_DECIMALS) != 1.0
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise SubmissionError(
            f"probabilities sum to {total[row - 1]:.9g}, not 1 (at {SUM_DECIMALS} decimals)",
            file=display, row=row, column="+".join(prob_cols),
        )
    return ValidationReport(df.height, expected)


def read_submission_proba(path: str | Path, competition: Competition, ids: Sequence[str]
                          ) -> np.ndarray:
    """The (n, 3) probabilities of a validated probabilities-layout submission, in the order of
    ``ids`` (rows are matched by id, as the graders do)."""
    df = read_submission(Path(path))
    layout = competition.submission
    by_id = {v: i for i, v in enumerate(df[layout.id_column].to_list())}
    order = np.array([by_id[str(i).strip()] for i in ids])
    proba = np.zeros((df.height, len(CLASSES)))
    for cls, col in zip(competition.classes, layout.columns[1:], strict=True):
        proba[:, CLASSES.index(cls)] = df[col].cast(pl.Float64).to_numpy()
    return proba[order]


__all__ = ["ValidationReport", "provenance_path", "read_submission", "read_submission_proba",
           "stage_submission", "validate_submission", "write_probabilities", "write_submission"]
