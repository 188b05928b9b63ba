"""Compiled kernels for the hot loops of :mod:`prefpred.features.build` (optional, exact).

``prefpred/features/_kernels.c`` (built by ``pip install``; see ``setup.py``) walks the UTF-8
bytes of polars string columns once per text and writes integer counts: the single-character and
run counts of a turn (:data:`TEXT_COUNTS`), the word trigrams of a turn, the term-count sums of a
row's word overlap and TF-IDF cosines, and a row's character-trigram set sizes. It releases the
GIL, so chunks run in parallel.

Which characters belong to which class is not written in C: :func:`class_table` builds a lookup
table from the regular expressions of :mod:`prefpred.features.patterns` (Python ``re`` over every
code point below :data:`TABLE_SIZE`), and :func:`check_patterns` refuses to run if a counted
pattern no longer has the shape the C code implements. The polars path of ``build.py`` computes
the same integers; every float feature is then computed by the same polars expressions, so the
features are bit-identical with and without the kernels (``tests/test_feature_kernels.py``).

``PREFPRED_FEATURE_KERNELS=0`` turns the kernels off (the polars path runs); a build without a C
compiler, or ``prefpred bundle``'s pure wheel, has none and uses polars.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from prefpred.features import patterns as P

try:  # the extension is optional
    from prefpred.features import _kernels
except ImportError:  # pragma: no cover - exercised by installs without a C compiler
    _kernels = None

#: Code points with a class in the table; every class of patterns.py lies below it (checked).
TABLE_SIZE: Final = 0x30000
#: Class bit -> the single-character pattern that defines it (order = bit order in _kernels.c).
CLASS_BITS: Final[tuple[tuple[str, str], ...]] = (
    ("ws", f"[{P.WS}]"),
    ("tokrun", f"[{P.TOKEN_RUN}]"),
    ("digit", P.COUNTED["digits"]),
    ("upper", P.COUNTED["upper"]),
    ("punct", P.COUNTED["punct"]),
    ("question", P.COUNTED["question"]),
    ("exclaim", P.COUNTED["exclaim"]),
    ("emoji", P.COUNTED["emoji"]),
    ("latin", P.COUNTED["latin"]),
    ("cyrillic", P.COUNTED["cyrillic"]),
    ("cjk", P.COUNTED["cjk"]),
    ("term", f"[{re.escape(P.SENT_END)}]"),
    ("wordrun", f"[{P.WORD_RUN}]"),
    ("wordone", f"[{P.CJK}]"),
)
#: Columns of :func:`text_counts`, feature-count names (order = K_* in _kernels.c).
TEXT_COUNTS: Final = ("chars", "words", "tokens", "sentences", "digits", "upper", "punct",
                      "question", "exclaim", "emoji", "latin", "cyrillic", "cjk")
#: Columns of :func:`word_overlap`: ``{x}{y}{d}`` = sum over the row's terms of document
#: frequency ``d`` of count_x * count_y (documents p, a, b), then term-set sizes.
WORD_COLUMNS: Final = (
    *[f"{x}{d}" for d in (1, 2, 3) for x in ("pp", "aa", "bb")],
    *[f"{x}{d}" for d in (2, 3) for x in ("ab", "pa", "pb")],
    "np", "iab", "uab", "ipa", "ipb",
)
#: The pattern shapes the C code implements (its run and sentence logic).
_SHAPES: Final = {
    "words": f"[^{P.WS}]+",
    "tokens": f"[{P.TOKEN_RUN}]+|[^{P.WS}]",
    "sentences": f"[^{P.WS}{P.SENT_END}][^{P.SENT_END}\\n]*",
    "WORD": f"[{P.WORD_RUN}]+|[{P.CJK}]",
}


def installed() -> bool:
    """The extension was compiled and imports."""
    return _kernels is not None


def available() -> bool:
    """The compiled kernels are installed and not turned off (``PREFPRED_FEATURE_KERNELS=0``)."""
    return installed() and os.environ.get("PREFPRED_FEATURE_KERNELS", "1") != "0"


def describe() -> str:
    """How features are computed here, for logs."""
    if available():
        return "compiled kernels"
    if installed():
        return "polars alone: PREFPRED_FEATURE_KERNELS=0"
    return "polars alone: the compiled kernels are not installed"


def check_patterns() -> None:
    """Refuse to count with the kernels if a pattern they implement has changed shape."""
    for name, shape in _SHAPES.items():
        pattern = P.WORD if name == "WORD" else P.COUNTED[name]
        if pattern != shape:
            raise RuntimeError(f"features: the pattern of {name!r} changed; update "
                               "prefpred/features/_kernels.c or set PREFPRED_FEATURE_KERNELS=0")


@functools.cache
def class_table() -> np.ndarray:
    """uint16 class bits per code point below :data:`TABLE_SIZE`, from the patterns."""
    check_patterns()
    every = "".join(map(chr, range(TABLE_SIZE)))
    table = np.zeros(TABLE_SIZE, dtype=np.uint16)
    for bit, (name, pattern) in enumerate(CLASS_BITS):
        spans = np.array([m.span() for m in re.finditer(pattern, every)], dtype=np.int64)
        if len(spans) and (spans[:, 1] - spans[:, 0] != 1).any():
            raise RuntimeError(f"features: class {name!r} is not a single-character pattern")
        table[spans[:, 0] if len(spans) else []] |= np.uint16(1 << bit)
    table.setflags(write=False)
    return table


def utf8_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string column as one array, and each string's byte offsets
    (``len(texts) + 1`` of them, starting at 0). Nulls count as empty strings."""
    arr = texts.fill_null("").to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    if data_buf is None or offsets[-1] == offsets[0]:
        return np.zeros(0, dtype=np.uint8), np.zeros(len(arr) + 1, dtype=np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data, np.ascontiguousarray(offsets - offsets[0])


def text_counts(texts: pl.Series) -> np.ndarray:
    """int64 ``(len(texts), len(TEXT_COUNTS))``: the counts of each text."""
    out = np.zeros((len(texts), len(TEXT_COUNTS)), dtype=np.int64)
    _kernels.text_counts(*utf8_buffers(texts), class_table(), out)
    return out


def word_ngrams(lowered: pl.Series) -> np.ndarray:
    """int64 ``(len(texts), 2)``: word trigrams of each (lower-cased) text, and how many of them
    repeat an earlier trigram of the same text."""
    out = np.zeros((len(lowered), 2), dtype=np.int64)
    _kernels.word_ngrams(*utf8_buffers(lowered), class_table(), out)
    return out


def word_overlap(p: pl.Series, a: pl.Series, b: pl.Series) -> pl.DataFrame:
    """:data:`WORD_COLUMNS` per row, from the lower-cased prompt and responses of each row."""
    out = np.zeros((len(p), len(WORD_COLUMNS)), dtype=np.int64)
    _kernels.word_overlap(*utf8_buffers(p), *utf8_buffers(a), *utf8_buffers(b), class_table(),
                          out)
    return pl.DataFrame(out, schema=list(WORD_COLUMNS), orient="row")


def char_overlap(a: pl.Series, b: pl.Series) -> np.ndarray:
    """int64 ``(rows, 3)``: distinct character trigrams of A, of B, and of both."""
    out = np.zeros((len(a), 3), dtype=np.int64)
    _kernels.char_overlap(*utf8_buffers(a), *utf8_buffers(b), out)
    return out
