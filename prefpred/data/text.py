"""Small text helpers shared by the readers: surrogate repair and prompt normalisation."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from prefpred.errors import DataError

if TYPE_CHECKING:
    from prefpred.data.table import Quirks

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of a high surrogate, a low surrogate, and a well-formed pair of them.
HIGH_ESCAPE = r"\\u[dD][89abAB][0-9a-fA-F]{2}"
LOW_ESCAPE = r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
PAIR_ESCAPE = HIGH_ESCAPE + LOW_ESCAPE


def has_surrogates(text: str) -> bool:
    """True if ``text`` holds a UTF-16 surrogate code point (unencodable as UTF-8)."""
    return _SURROGATE.search(text) is not None


def repair_surrogates(text: str) -> str:
    """Join surrogate pairs and replace lone surrogates with U+FFFD.

    The Kaggle arena files hold JSON escapes such as ``"\\ud83d"`` without their partner;
    ``json.loads`` turns them into lone surrogates that cannot be written as UTF-8.
    """
    if not has_surrogates(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def json_error(err: json.JSONDecodeError, *, line: bool = False) -> str:
    """``malformed JSON (<what> at char N)`` for a decoding error; with ``line``, the line of a
    multi-line document too. (json's own messages may end in "at": no word is doubled.)"""
    where = f"char {err.pos}" if not line else f"line {err.lineno}, column {err.colno}"
    joiner = " " if err.msg.endswith(" at") else " at "
    return f"malformed JSON ({err.msg}{joiner}{where})"


def repair_text(text: str, *, strict: bool, file: str | Path | None, row: int, column: str,
                quirks: Quirks | None) -> str:
    """``text`` with lone surrogates repaired (:func:`repair_surrogates`) and the repair counted
    as a quirk; with ``strict``, a located :class:`DataError` instead."""
    if not has_surrogates(text):
        return text
    if strict:
        raise DataError("text holds a lone UTF-16 surrogate escape", file=file, row=row,
                        column=column, fix="drop --strict to replace it with U+FFFD")
    if quirks is not None:
        quirks.add("lone surrogate escapes replaced with U+FFFD", 1,
                   f"row {row}, column '{column}'")
    return repair_surrogates(text)


def lone_surrogate_escape_expr(column: str) -> pl.Expr:
    """Polars expression: does a JSON-encoded cell hold a surrogate escape outside a pair?

    Counts high, low and paired escapes; any mismatch flags the cell. A false positive
    (an escaped backslash before ``ud83d``) only routes the cell to the exact Python decoder.
    """
    col = pl.col(column)
    pairs = col.str.count_matches(PAIR_ESCAPE)
    return (col.str.count_matches(HIGH_ESCAPE) != pairs) | (col.str.count_matches(LOW_ESCAPE) != pairs)


def normalise_prompt_expr(column: str = "prompt") -> pl.Expr:
    """Polars expression giving the normalised text of a turn list, used as the fold group key:
    turns joined, lower-cased, whitespace stripped at both ends."""
    return pl.col(column).list.join("\n").str.to_lowercase().str.strip_chars()


def stable_digest(text: str, size: int = 10) -> str:
    """A short hex digest stable across Python, polars and platform versions."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).hexdigest()
