"""PandaLM test set: prompt = instruction + input; label = the majority of three annotators."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.mapped import finish_table, require_columns
from prefpred.data.raw import read_records
from prefpred.data.table import VOTES, PreferenceTable, Quirks, first_row
from prefpred.data.turns import decode_turns
from prefpred.errors import DataError
from prefpred.labels import TIE, A, B


def read_pandalm(path: str | Path, *, source: str = "pandalm", strict: bool = False) -> PreferenceTable:
    """PandaLM test set: prompt = instruction + input; label = majority of three annotators
    (0 = tie, 1 = response1, 2 = response2); weight = share of annotators agreeing with it.
    Three-way disagreement gives a tie with weight 1/3. A bare ``NaN`` input counts as absent.
    Every vote is kept in ``votes`` (judge = the column name, ``annotator1`` ...), so
    :mod:`prefpred.data.votes` can rebuild the label as vote shares or Dawid-Skene posteriors.
    """
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict)
    annot = [c for c in raw.columns if re.fullmatch(r"annotator\d+", c)]
    require_columns(raw, ["instruction", "input", "response1", "response2"], path)
    if not annot:
        raise DataError("missing annotator columns (annotator1, annotator2, ...)", file=path,
                        column="annotator1")
    inp = raw["input"].cast(pl.String)
    n_nan = int(inp.is_null().sum())
    quirks.add("input is NaN/null (treated as absent)", n_nan)
    votes = np.full((raw.height, len(annot)), -1, dtype=np.int64)
    for j, col in enumerate(annot):
        v = raw[col].cast(pl.Float64, strict=False)
        bad = v.is_null() | ~v.is_in([0.0, 1.0, 2.0])
        if bad.any():
            row = first_row(bad)
            raise DataError(f"vote {raw[col][row - 1]!r} is not 0, 1 or 2", file=path, row=row,
                            column=col)
        votes[:, j] = v.to_numpy().astype(np.int64)
    # vote codes: 0 tie, 1 first, 2 second -> class indices TIE, A, B
    to_class = np.array([TIE, A, B])
    counts = np.stack([(to_class[votes] == k).sum(1) for k in range(3)], axis=1)
    top = counts.max(1)
    label = np.where((counts == top[:, None]).sum(1) > 1, TIE, counts.argmax(1))
    disagree = int(((counts == top[:, None]).sum(1) > 1).sum())
    quirks.add("annotators split three ways (labelled tie)", disagree)
    weight = top / len(annot)
    instruction = raw["instruction"].cast(pl.String).fill_null("")
    prompt = pl.select(
        pl.when(pl.lit(inp).is_null() | (pl.lit(inp).str.strip_chars() == ""))
        .then(pl.lit(instruction))
        .otherwise(pl.lit(instruction) + "\n\n" + pl.lit(inp))
    ).to_series()
    id_series = (raw["idx"].cast(pl.String) if "idx" in raw.columns
                 else pl.Series([str(i) for i in range(1, raw.height + 1)]))
    df = pl.DataFrame({
        "id": ("pandalm-" + id_series).alias("id"),
        "prompt": decode_turns(prompt.alias("prompt"), column="instruction", encoding="text",
                               file=path, quirks=quirks),
        "response_a": decode_turns(raw["response1"].cast(pl.String), column="response1",
                                   encoding="text", file=path, quirks=quirks),
        "response_b": decode_turns(raw["response2"].cast(pl.String), column="response2",
                                   encoding="text", file=path, quirks=quirks),
        "label": pl.Series(label, dtype=pl.Int8),
        "weight": pl.Series(weight, dtype=pl.Float64),
        "language": pl.Series(["en"] * raw.height),
        "votes": pl.Series([[{"judge": name, "label": int(v)} for name, v in zip(annot, row,
                                                                               strict=True)]
                            for row in to_class[votes]], dtype=VOTES),
    })
    if "cmp_key" in raw.columns:
        models = raw["cmp_key"].cast(pl.String).str.split_exact("_", 1)
        df = df.with_columns(model_a=models.struct.field("field_0"),
                             model_b=models.struct.field("field_1"))
    return finish_table(df, source=source, file=path, quirks=quirks)
