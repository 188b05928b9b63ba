"""LLMBar (Zeng et al.): instruction-following pairs with a gold label by the authors, no ties.

A ``dataset.json`` is a JSON array of ``input``, ``output_1``, ``output_2``, ``label`` (1 or 2).
Given a folder, every ``dataset.json`` below it is read (sorted by path; the judges' ``result.json``
files beside them are not). The subset is the folder path relative to the one given
(``Natural``, ``Adversarial/Neighbor``; for a single file, its folder's name) and is kept in the id
only: ``llmbar/Adversarial/Neighbor/17`` is the 17th element of that subset's array. Every row
gets the same source (``llmbar`` by default), ``tie_allowed`` False, no model names.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from prefpred.data.mapped import finish_table, labels_from_column, require_columns
from prefpred.data.raw import read_records
from prefpred.data.table import PreferenceTable, Quirks, first_row
from prefpred.data.turns import decode_turns
from prefpred.errors import DataError
from prefpred.labels import A, B

_LABELS = {"1": A, "2": B}


def llmbar_files(path: Path) -> list[tuple[str, Path]]:
    """(subset, file) for a ``dataset.json`` or every one below a folder."""
    if path.is_dir():
        files = sorted(path.rglob("dataset.json"))
        if not files:
            raise DataError("no dataset.json below this folder", file=path)
        return [(f.parent.relative_to(path).as_posix() if f.parent != path else path.name, f)
                for f in files]
    return [(path.parent.name or "llmbar", path)]


def _read_one(subset: str, file: Path, *, id_prefix: str, quirks: Quirks, strict: bool
              ) -> pl.DataFrame:
    raw = read_records(file, quirks=quirks, strict=strict)
    require_columns(raw, ["input", "output_1", "output_2", "label"], file)
    for col in ("input", "output_1", "output_2"):
        if raw[col].dtype != pl.String:
            raise DataError(f"expected text, got {raw[col].dtype}", file=file, column=col)
        if raw[col].null_count():
            raise DataError("text is missing (no such key, or null)", file=file,
                            row=first_row(raw[col].is_null()), column=col)
    return pl.DataFrame({
        "id": [f"{id_prefix}/{subset}/{i}" for i in range(1, raw.height + 1)],
        "prompt": decode_turns(raw["input"].alias("prompt"), column="input", encoding="text",
                               file=file, quirks=quirks),
        "response_a": decode_turns(raw["output_1"].alias("response_a"), column="output_1",
                                   encoding="text", file=file, quirks=quirks),
        "response_b": decode_turns(raw["output_2"].alias("response_b"), column="output_2",
                                   encoding="text", file=file, quirks=quirks),
        "label": labels_from_column(raw["label"], _LABELS, file, "label"),
    })


def read_llmbar(path: str | Path, *, source: str = "llmbar", strict: bool = False
                ) -> PreferenceTable:
    """LLMBar ``dataset.json`` file(s) as two-class pairs (see the module doc)."""
    path = Path(path)
    quirks = Quirks()
    frames = [_read_one(subset, file, id_prefix="llmbar", quirks=quirks, strict=strict)
              for subset, file in llmbar_files(path)]
    df = pl.concat(frames).with_columns(language=pl.lit("en"), tie_allowed=pl.lit(False))
    return finish_table(df, source=source, file=path, quirks=quirks)
