"""Decoding text cells into turn lists (``list[str]``), vectorised with an exact fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import polars as pl

from prefpred.data.table import TURNS, Quirks, first_row
from prefpred.data.text import json_error, lone_surrogate_escape_expr, repair_text
from prefpred.errors import DataError

TurnEncoding = Literal["json", "text"]


def _decode_json_python(
    cells: list[str | None], rows: list[int], *, file, column: str, strict: bool, quirks: Quirks
) -> list[list[str | None]]:
    out = []
    for cell, row in zip(cells, rows, strict=True):
        if cell is None or not cell.strip():
            raise DataError("empty value, expected a JSON list of strings", file=file, row=row,
                            column=column)
        try:
            value = json.loads(cell)
        except json.JSONDecodeError as err:
            raise DataError(json_error(err), file=file, row=row,
                            column=column, fix="expected a JSON list of strings") from None
        if value is None:
            raise DataError("value is JSON null, expected a list of strings", file=file, row=row,
                            column=column)
        if not isinstance(value, list):
            raise DataError(f"expected a JSON list of strings, got {type(value).__name__}",
                            file=file, row=row, column=column)
        turns: list[str | None] = []
        for item in value:
            if item is None or isinstance(item, str):
                turns.append(None if item is None else
                             repair_text(item, strict=strict, file=file, row=row, column=column,
                                     quirks=quirks))
            elif isinstance(item, (int, float, bool)):
                turns.append(json.dumps(item))
            else:
                raise DataError(f"a turn is a {type(item).__name__}, expected a string",
                                file=file, row=row, column=column)
        out.append(turns)
    return out


def exact_cells_expr(column: str) -> pl.Expr:
    """Cells the vectorised JSON decoder may get wrong, by a cheap literal test: null or blank
    cells, anything that is not a JSON list, and any cell with a surrogate escape (``\\ud83d``
    may be half an emoji; polars would silently turn a lone one into NUL)."""
    col = pl.col(column)
    return (col.is_null() | ~col.str.strip_chars_start().str.starts_with("[")
            | col.str.contains("\\ud", literal=True) | col.str.contains("\\uD", literal=True))


def fast_json_turns_exprs(column: str) -> list[pl.Expr]:
    """Two expressions over a raw JSON column: the vectorised decode (in place) and the raw text
    of the cells the exact decoder must redo (``__exact_<column>``, null elsewhere). The decode
    raises on malformed JSON; callers then take the exact path, which names the row."""
    exact = exact_cells_expr(column)
    return [
        pl.col(column).str.json_decode(TURNS).alias(column),
        pl.when(exact).then(pl.col(column)).alias(f"__exact_{column}"),
    ]


def patch_exact_cells(df: pl.DataFrame, column: str, *, file, quirks: Quirks, strict: bool,
                      source_column: str | None = None) -> tuple[pl.DataFrame, list[int]]:
    """Decode the cells :func:`fast_json_turns_exprs` set aside, exactly, and put them in place.

    Bad cells raise a :class:`DataError` naming their row; lone surrogates are repaired (or
    rejected with ``strict``). Drops the ``__exact_<column>`` helper column; returns the frame
    and the 0-based rows it patched.
    """
    helper = f"__exact_{column}"
    todo = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"), pl.col(helper))
    todo = todo.filter(pl.col(helper).is_not_null())
    # of the set-aside cells, only true lone surrogates and non-lists need the exact decode
    # (well-paired emoji escapes were decoded right); the regex runs on these few cells only
    not_list = ~pl.col(helper).str.strip_chars_start().str.starts_with("[")
    todo = todo.filter(not_list | lone_surrogate_escape_expr(helper))
    if todo.height:
        values = _decode_json_python(todo[helper].to_list(), (todo["__row"] + 1).to_list(),
                                     file=file, column=source_column or column, strict=strict,
                                     quirks=quirks)
        patch = pl.DataFrame({"__row": todo["__row"], column: pl.Series(values, dtype=TURNS)})
        df = df.with_row_index("__row").update(patch, on="__row").drop("__row")
    return df.drop(helper), todo["__row"].to_list()


def decode_turns(
    series: pl.Series,
    *,
    column: str,
    encoding: TurnEncoding,
    file: str | Path | None,
    quirks: Quirks,
    strict: bool = False,
    allow_empty_list: bool = False,
) -> pl.Series:
    """Decode one raw column into ``list[str]`` turns.

    ``encoding='json'``: each cell is a JSON list of strings (Kaggle arena files); ``null``
    entries become ``""`` and are counted as a quirk. ``encoding='text'``: each cell is one turn.
    Lone surrogate escapes are replaced with U+FFFD (an error with ``strict=True``).
    """
    name = series.name
    if series.dtype == TURNS or isinstance(series.dtype, pl.List):
        decoded = series.cast(TURNS)
        if decoded.null_count():
            raise DataError("empty value, expected a list of turns", file=file,
                            row=first_row(decoded.is_null()), column=column)
    elif encoding == "text":
        if series.dtype != pl.String:
            series = series.cast(pl.String)
        if series.null_count():
            raise DataError("empty value (null or NaN), expected text", file=file,
                            row=first_row(series.is_null()), column=column)
        decoded = series.to_frame("t").select(pl.concat_list(pl.col("t")))["t"]
    else:
        if series.dtype != pl.String:
            raise DataError(f"expected JSON-encoded text, got {series.dtype}", file=file,
                            column=column)
        frame = series.to_frame("c")
        try:
            decoded_frame = frame.lazy().with_columns(fast_json_turns_exprs("c")).collect()
        except Exception:  # noqa: BLE001 - malformed JSON: the exact pass names the row
            rows = list(range(1, frame.height + 1))
            decoded = pl.Series(_decode_json_python(frame["c"].to_list(), rows, file=file,
                                                    column=column, strict=strict, quirks=quirks),
                                dtype=TURNS)
        else:
            decoded = patch_exact_cells(decoded_frame, "c", file=file, quirks=quirks,
                                        strict=strict, source_column=column)[0]["c"]
        if decoded.null_count():
            raise DataError("value is JSON null, expected a list of strings", file=file,
                            row=first_row(decoded.is_null()), column=column)
    lengths = decoded.list.len()
    if not allow_empty_list:
        empty = lengths == 0
        if empty.any():
            raise DataError("empty turn list []", file=file, row=first_row(empty), column=column)
    # explode turns empty lists into one null each: subtract those to count null turns
    n_null = decoded.explode().null_count() - int((lengths == 0).sum())
    if n_null:
        null_turns = decoded.list.eval(pl.element().is_null()).list.sum()
        quirks.add(f"null turns in {column} (read as empty text)", n_null,
                   f"row {first_row(null_turns > 0)}")
        decoded = decoded.list.eval(pl.element().fill_null(""))
    return decoded.alias(name)


def empty_turns_expr(column: str) -> pl.Expr:
    """Per row: every turn of ``column`` is empty or whitespace."""
    return pl.col(column).list.eval(pl.element().str.strip_chars().str.len_bytes() == 0).list.all()


def count_empty(series: pl.Series) -> pl.Series:
    """Boolean per row: every turn is empty or whitespace."""
    return series.to_frame("t").select(empty_turns_expr("t"))["t"]
