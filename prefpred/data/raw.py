"""Reading raw record files (CSV, JSON lines, JSON arrays, parquet) with located errors.

Fast paths use polars; when polars rejects a file, a slower Python pass finds the first bad
row and column so the error can name them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import polars as pl

from prefpred.data.table import Quirks
from prefpred.data.text import (
    HIGH_ESCAPE,
    LOW_ESCAPE,
    PAIR_ESCAPE,
    json_error,
    repair_text,
)
from prefpred.errors import DataError

_ESCAPED_BYTE = range(0xDC80, 0xDD00)  # what surrogateescape turns undecodable bytes into


def file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                         (".json", "json"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return kind
    raise DataError(f"unknown file type {path.suffix!r}", file=path,
                    fix="use .csv, .tsv, .jsonl, .json or .parquet")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", file=path)
    if path.is_dir():
        raise DataError("is a directory, expected a file", file=path)
    if path.stat().st_size == 0:
        raise DataError("file is empty", file=path)


def _first_bad_byte_cell(path: Path, delimiter: str) -> DataError:
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, [])
    for col_idx, name in enumerate(header):
        if any(ord(ch) in _ESCAPED_BYTE for ch in name):
            return DataError("header is not valid UTF-8", file=path, column=f"#{col_idx + 1}")
    for row_idx, record in enumerate(reader, start=1):
        for col_idx, cell in enumerate(record):
            if any(ord(ch) in _ESCAPED_BYTE for ch in cell):
                column = header[col_idx] if col_idx < len(header) else f"#{col_idx + 1}"
                return DataError("text is not valid UTF-8", file=path, row=row_idx, column=column,
                                 fix="re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")
    return DataError("text is not valid UTF-8", file=path, fix="re-encode the file as UTF-8")


def _csv_shape_error(path: Path, delimiter: str, cause: Exception) -> DataError:
    text = path.read_text("utf-8", "replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, [])
    for row_idx, record in enumerate(reader, start=1):
        if len(record) != len(header):
            return DataError(f"has {len(record)} fields, the header has {len(header)}", file=path,
                             row=row_idx, fix="check quoting of that row")
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return DataError(f"cannot be parsed as CSV: {first}", file=path)


def drop_index_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Drop unnamed leading index columns written by pandas (``""`` or ``Unnamed: 0``)."""
    drop = [c for c in df.columns if c.strip() == "" or c.startswith("Unnamed:")]
    return df.drop(drop) if drop else df


def csv_header(path: Path, *, delimiter: str = ",", display: str | Path | None = None
               ) -> list[str]:
    """The column names of a CSV file's header; a repeated name is a located error (polars
    would silently rename the second one)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), [])
    seen: set[str] = set()
    for name in header:
        key = name.strip()
        if key in seen:
            raise DataError("the header repeats this column name", file=display or path,
                            column=key, fix="give every column its own name")
        seen.add(key)
    return header


def read_csv(path: Path, *, delimiter: str = ",") -> pl.DataFrame:
    """All columns as strings; empty cells as null."""
    _check_exists(path)
    csv_header(path, delimiter=delimiter)
    try:
        df = pl.read_csv(path, separator=delimiter, infer_schema=False, quote_char='"')
    except pl.exceptions.ComputeError as err:
        if "utf-8" in str(err).lower() or "utf8" in str(err).lower():
            raise _first_bad_byte_cell(path, delimiter) from None
        raise _csv_shape_error(path, delimiter, err) from None
    except (pl.exceptions.NoDataError, pl.exceptions.ShapeError) as err:
        if isinstance(err, pl.exceptions.NoDataError):
            raise DataError("file is empty", file=path) from None
        raise _csv_shape_error(path, delimiter, err) from None
    if df.height == 0:
        raise DataError("file has a header but no data rows", file=path)
    return drop_index_columns(df)


def _clean_value(value: object, *, file: Path, row: int, key: str, quirks: Quirks | None,
                 strict: bool) -> object:
    """NaN -> None; lone surrogates in strings (also nested) repaired and counted."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return repair_text(value, strict=strict, file=file, row=row, column=key, quirks=quirks)
    if isinstance(value, list):
        return [_clean_value(v, file=file, row=row, key=key, quirks=quirks, strict=strict)
                for v in value]
    if isinstance(value, dict):
        return {k: _clean_value(v, file=file, row=row, key=key, quirks=quirks, strict=strict)
                for k, v in value.items()}
    return value


def _clean_record(obj: dict, *, file: Path, row: int, quirks: Quirks | None, strict: bool) -> dict:
    return {k: _clean_value(v, file=file, row=row, key=k, quirks=quirks, strict=strict)
            for k, v in obj.items()}


def _has_lone_surrogate_escape(text: str) -> bool:
    if not re.search(f"{HIGH_ESCAPE}|{LOW_ESCAPE}", text):
        return False
    pairs = len(re.findall(PAIR_ESCAPE, text))
    return len(re.findall(HIGH_ESCAPE, text)) != pairs or len(re.findall(LOW_ESCAPE, text)) != pairs


def _read_utf8(path: Path, *, lines_are_rows: bool) -> tuple[bytes, str]:
    """The file's bytes and text; invalid UTF-8 is an error naming its line (its row, in a
    JSON-lines file)."""
    _check_exists(path)
    raw = path.read_bytes()
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        if lines_are_rows:
            raise DataError("text is not valid UTF-8", file=path, row=line,
                            fix="re-encode the file as UTF-8") from None
        raise DataError(f"text is not valid UTF-8 (line {line})", file=path,
                        fix="re-encode the file as UTF-8") from None


def read_jsonl(path: Path, *, quirks: Quirks | None = None, strict: bool = False) -> pl.DataFrame:
    """JSON lines; row N is the N-th non-blank line. Bare ``NaN`` tokens become null."""
    raw, text = _read_utf8(path, lines_are_rows=True)
    first = next((ln for ln in text.splitlines() if ln.strip()), None)
    if first is not None:
        with contextlib.suppress(json.JSONDecodeError):  # located below
            _loads(first, file=path, row=1)
    if "NaN" not in text and not _has_lone_surrogate_escape(text):
        try:
            df = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
            if df.height:
                return drop_index_columns(df)
        except Exception:  # noqa: BLE001 - polars raises several types; the Python pass locates it
            pass
    records = []
    row = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        row += 1
        try:
            obj = _loads(line, file=path, row=row)
        except json.JSONDecodeError as err:
            raise DataError(json_error(err), file=path, row=row) from None
        if not isinstance(obj, dict):
            raise DataError("a JSON line must be an object", file=path, row=row)
        records.append(_clean_record(obj, file=path, row=row, quirks=quirks, strict=strict))
    if not records:
        raise DataError("file has no records", file=path)
    return _records_to_frame(records, path)


def read_json_array(path: Path, *, quirks: Quirks | None = None, strict: bool = False) -> pl.DataFrame:
    """A JSON array of objects (or JSON lines saved as .json)."""
    _raw, text = _read_utf8(path, lines_are_rows=False)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return read_jsonl(path, quirks=quirks, strict=strict)
    try:
        data = _loads(text, file=path, row=None)
    except json.JSONDecodeError as err:
        raise DataError(json_error(err, line=True), file=path) from None
    if not isinstance(data, list):
        raise DataError("expected a JSON array of objects", file=path)
    if not data:
        raise DataError("file has no records", file=path)
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError("array element is not an object", file=path, row=i)
    records = [_clean_record(o, file=path, row=i, quirks=quirks, strict=strict)
               for i, o in enumerate(data, start=1)]
    return _records_to_frame(records, path)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` for json: an object that repeats a key is an error (json would keep
    the last value silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _loads(text: str, *, file: Path, row: int | None) -> object:
    """``json.loads`` refusing repeated keys, with located errors."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as err:
        raise DataError("the object repeats this key", file=file, row=row, column=err.key,
                        fix="give every field its own name") from None


def _records_to_frame(records: list[dict], path: Path) -> pl.DataFrame:
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except Exception:  # noqa: BLE001 - mixed types in a column: keep each cell's JSON/str form
        keys: list[str] = []
        for rec in records:
            keys.extend(k for k in rec if k not in keys)
        cols = {
            k: [None if r.get(k) is None else (r[k] if isinstance(r[k], str) else json.dumps(r[k]))
                for r in records]
            for k in keys
        }
        return pl.DataFrame(cols, schema={k: pl.String for k in keys})


def read_parquet(path: Path) -> pl.DataFrame:
    _check_exists(path)
    try:
        df = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot be read as parquet: {str(err).splitlines()[0]}", file=path) from None
    if df.height == 0:
        raise DataError("file has no rows", file=path)
    return drop_index_columns(df)


def read_records(path: str | Path, *, quirks: Quirks | None = None, strict: bool = False
                 ) -> pl.DataFrame:
    """Read any supported record file into a frame of raw columns."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "csv":
        return read_csv(path)
    if kind == "tsv":
        return read_csv(path, delimiter="\t")
    if kind == "jsonl":
        return read_jsonl(path, quirks=quirks, strict=strict)
    if kind == "json":
        return read_json_array(path)
    return read_parquet(path)


def peek_columns(path: str | Path) -> list[str]:
    """Column names of a record file, reading as little of it as possible."""
    path = Path(path)
    kind = file_kind(path)
    _check_exists(path)
    if kind in ("csv", "tsv"):
        header = csv_header(path, delimiter="," if kind == "csv" else "\t")
        return [c for c in header if c.strip() and not c.startswith("Unnamed:")]
    if kind == "parquet":
        try:
            return list(pl.read_parquet_schema(path))
        except Exception as err:  # noqa: BLE001
            raise DataError(f"cannot be read as parquet: {str(err).splitlines()[0]}",
                            file=path) from None
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(1 << 16)
    if kind == "jsonl" or head.lstrip().startswith("{"):
        first = next((ln for ln in head.splitlines() if ln.strip()), "")
        try:
            obj = _loads(first, file=path, row=1)
        except json.JSONDecodeError:
            return list(read_records(path).columns)
        return list(obj) if isinstance(obj, dict) else []
    return list(read_records(path).columns)


def scan_records(path: str | Path) -> pl.LazyFrame | None:
    """A lazy scan of a CSV/TSV (all columns as text) or parquet file; None for JSON formats.

    Errors surface only when collected; callers fall back to :func:`read_records`, which
    locates them.
    """
    path = Path(path)
    kind = file_kind(path)
    _check_exists(path)
    if kind in ("csv", "tsv"):
        csv_header(path, delimiter="," if kind == "csv" else "\t")
        return pl.scan_csv(path, separator="," if kind == "csv" else "\t", infer_schema=False)
    if kind == "parquet":
        return pl.scan_parquet(path)
    return None
