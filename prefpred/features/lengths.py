"""Pair lengths: the characters of prompt and responses, for stackers and length-binned
calibration (the full feature library lives in :mod:`prefpred.features.build`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable

TEXT_COLUMNS = ("prompt", "response_a", "response_b")


def _chars(column: str) -> pl.Expr:
    """Characters of all turns of a text column, joined without separators."""
    return pl.col(column).list.join("").str.len_chars()


def pair_lengths(table: PreferenceTable) -> np.ndarray:
    """Total characters of prompt and both responses, all turns, per row (a length-bin key)."""
    total = sum(_chars(c).cast(pl.Int64) for c in TEXT_COLUMNS)
    return table.df.select(total.alias("n"))["n"].to_numpy().astype(np.float64)


def length_features(table: PreferenceTable) -> pl.DataFrame:
    """A few cheap pair features for a stacker: log lengths and their difference, turns."""
    def log_chars(col: str) -> pl.Expr:
        return _chars(col).cast(pl.Float64).log1p()

    return table.df.select(
        "id",
        log_chars("prompt").alias("log_len_prompt"),
        log_chars("response_a").alias("log_len_a"),
        log_chars("response_b").alias("log_len_b"),
        (log_chars("response_a") - log_chars("response_b")).alias("log_len_diff"),
        pl.col("prompt").list.len().cast(pl.Float64).alias("turns"),
    )
