"""A summary of a preference table: rows, labels, turns, lengths and the quirks met loading it."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.labels import CLASSES

PERCENTILES = (5, 25, 50, 75, 95, 99)


def describe(table: PreferenceTable) -> dict[str, Any]:
    df = table.df
    y = table.labels()
    labelled = y >= 0
    label_counts = {c: int((y == i).sum()) for i, c in enumerate(CLASSES)}
    lengths = df.select(
        prompt=pl.col("prompt").list.join("\n").str.len_chars(),
        response_a=pl.col("response_a").list.join("\n").str.len_chars(),
        response_b=pl.col("response_b").list.join("\n").str.len_chars(),
    )
    length_pct = {
        col: {f"p{q}": float(np.percentile(lengths[col].to_numpy(), q)) for q in PERCENTILES}
        for col in lengths.columns
    }
    turns = df["prompt"].list.len()
    return {
        "file": table.origin,
        "rows": len(table),
        "labelled": int(labelled.sum()),
        "labels": label_counts,
        "sources": dict(df.group_by("source").len().sort("source").iter_rows()),
        "prompt_groups": int(df["group"].n_unique()),
        "turns": {str(k): int(v) for k, v in turns.value_counts().sort("prompt").iter_rows()},
        "length_chars": length_pct,
        "languages": {str(k): int(v) for k, v in
                      df.group_by("language").len().sort("language").iter_rows()},
        "two_class_rows": int((~df["tie_allowed"]).sum()),
        "soft_label_rows": int(df.height - df["soft_label"].null_count()),
        "votes": {str(k): int(v) for k, v in df.select(pl.col("votes").list.len().alias("n"))
                  .drop_nulls().group_by("n").len().sort("n").iter_rows()},
        "weights": {"min": float(df["weight"].min()), "max": float(df["weight"].max()),
                    "mean": float(df["weight"].mean())},
        "quirks": dict(table.quirks.counts),
        "quirk_examples": dict(table.quirks.examples),
    }


def render(info: dict[str, Any]) -> str:
    lines = [f"file: {info['file']}", f"rows: {info['rows']} ({info['labelled']} labelled, "
             f"{info['prompt_groups']} prompt groups)"]
    if info["labelled"]:
        total = max(info["labelled"], 1)
        lines.append("labels: " + ", ".join(
            f"{k} {v} ({v / total:.1%})" for k, v in info["labels"].items()))
    lines.append("sources: " + ", ".join(f"{k} {v}" for k, v in info["sources"].items()))
    lines.append("prompt turns: " + ", ".join(f"{k}: {v}" for k, v in info["turns"].items()))
    lines.append("languages: " + ", ".join(f"{k}: {v}" for k, v in info["languages"].items()))
    if info["two_class_rows"]:
        lines.append(f"two-class rows (judged without a tie option): {info['two_class_rows']}")
    if info["soft_label_rows"]:
        lines.append(f"rows with a soft label: {info['soft_label_rows']}")
    if info["votes"]:
        lines.append("votes per row: " + ", ".join(f"{k}: {v} rows"
                                                   for k, v in info["votes"].items()))
    w = info["weights"]
    lines.append(f"sample weight: min {w['min']:.3g}, mean {w['mean']:.3g}, max {w['max']:.3g}")
    lines.append("length in characters: " + "  ".join(f"{q:>7}" for q in
                                                      (f"p{p}" for p in PERCENTILES)))
    for col, pct in info["length_chars"].items():
        lines.append(f"  {col:<18}" + "  ".join(f"{v:>7.0f}" for v in pct.values()))
    if info["quirks"]:
        lines.append("quirks found:")
        for name, count in info["quirks"].items():
            example = info["quirk_examples"].get(name)
            lines.append(f"  {name}: {count}" + (f" (first: {example})" if example else ""))
    else:
        lines.append("quirks found: none")
    return "\n".join(lines)
