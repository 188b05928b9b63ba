"""The format registry: every supported source format by name, detection from a file's columns
or folder layout, and :func:`load_table`, the one entry point for reading data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefpred.data.mapped import ColumnMap, read_mapped
from prefpred.data.raw import peek_columns
from prefpred.data.sources.arena import KAGGLE_LMSYS, WSDM
from prefpred.data.sources.benchmarks import AUTOJ, LLMEVAL2, llmeval2_transcripts
from prefpred.data.sources.conversations import read_arena_conversations, read_trl_pairs
from prefpred.data.sources.hh_rlhf import looks_like_hh, read_hh_rlhf
from prefpred.data.sources.llmbar import read_llmbar
from prefpred.data.sources.mtbench import read_mt_bench, read_mt_bench_unjudged
from prefpred.data.sources.pandalm import read_pandalm
from prefpred.data.table import SCHEMA, PreferenceTable, Quirks
from prefpred.errors import DataError
from prefpred.labels import KAGGLE_COLUMNS


def read_canonical(path: str | Path, *, source: str | None = None, strict: bool = False
                   ) -> PreferenceTable:
    """A table written by :meth:`PreferenceTable.write_parquet` (sources kept per row)."""
    return PreferenceTable.read_parquet(path)


def no_tie_option(df: pl.DataFrame, quirks: Quirks) -> pl.DataFrame:
    """Transform of the formats whose judgments offered no tie option (two-class rows)."""
    return df.with_columns(tie_allowed=pl.lit(False))


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Format:
    """A source format: its reader, the source name its rows get, and for the column-mapped
    formats their :class:`ColumnMap`, which a competition TOML may re-map (``columns``)."""

    name: str
    description: str
    reader: Callable[..., PreferenceTable]
    default_source: str
    column_map: ColumnMap | None = None

    @property
    def takes_columns(self) -> bool:
        return self.column_map is not None


def _mapped(name: str, description: str, cmap: ColumnMap, default_source: str,
            transform=None) -> Format:
    """A column-mapped format: ``columns`` (from a competition TOML) override ``cmap``'s."""
    def reader(path, *, source, strict=False, columns: Mapping[str, Any] | None = None):
        cm = cmap.with_overrides(columns) if columns else cmap
        return read_mapped(path, cm, source=source, strict=strict, transform=transform)

    return Format(name, description, reader, default_source, column_map=cmap)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _mapped("kaggle-lmsys", "Kaggle LMSYS arena train/test.csv or the HF 55k parquet "
                "(JSON turn lists, one-hot winner columns)", KAGGLE_LMSYS, "lmsys-kaggle"),
        _mapped("wsdm", "WSDM Cup multilingual arena (plain-text prompt/responses, winner "
                "model_a/model_b, language; no tie option)", WSDM, "wsdm", no_tie_option),
        Format("arena-conversations", "arena sets with conversation_a/_b message lists and "
               "winner (tie, both_bad, tie (bothbad))", read_arena_conversations, "arena"),
        Format("mt-bench", "FastChat MT-Bench human judgments + questions + model answers (folder)",
               read_mt_bench, "mt-bench-human"),
        Format("mt-bench-unjudged", "MT-Bench model answers no human judged: every unjudged "
               "pair of turn-1 answers, unlabelled, grouped by question (a folder)",
               read_mt_bench_unjudged, "mt-bench-unjudged"),
        Format("hh-rlhf", "Anthropic hh-rlhf chosen/rejected transcripts (.jsonl or .jsonl.gz; "
               "two-class)", read_hh_rlhf, "hh-rlhf-harmless"),
        Format("llmbar", "LLMBar dataset.json (input, output_1/2, label 1|2) or a folder of them "
               "(two-class)", read_llmbar, "llmbar"),
        _mapped("autoj", "Auto-J pairwise test data (scenario, prompt, response 1/2, label "
                "0/1/2)", AUTOJ, "autoj-pairwise"),
        Format("pandalm", "PandaLM test set (instruction, input, response1/2, annotator votes)",
               read_pandalm, "pandalm"),
        _mapped("llmeval2", "LLMEval² benchmark (query, response1/2, human model1/model2/tie, "
                "dataset)", LLMEVAL2, "llmeval2", llmeval2_transcripts),
        Format("trl", "TRL chosen/rejected pairs (text or message lists)", read_trl_pairs, "trl"),
        _mapped("mapped", "any CSV/JSONL/parquet whose columns a competition TOML maps",
                ColumnMap(), "custom"),
        Format("canonical", "a PreferenceTable written by prefpred (parquet with the canonical "
               "columns)", read_canonical, "canonical"),
    )
}


def detect_format(path: str | Path) -> str:
    """Guess the format from a folder layout or a file's column names."""
    path = Path(path)
    if path.is_dir():
        if (path / "question.jsonl").exists():
            return "mt-bench"
        if (path / "dataset.json").exists() or next(path.rglob("dataset.json"), None):
            return "llmbar"
        raise DataError("cannot tell the format of this folder", file=path,
                        fix="pass --format")
    if path.name.startswith("human_judgments") or (path.parent / "question.jsonl").exists() and \
            path.name != "question.jsonl":
        return "mt-bench"
    if path.name.lower().endswith((".jsonl.gz", ".jsonl")) and looks_like_hh(path):
        return "hh-rlhf"
    cols = set(peek_columns(path))
    if {"input", "output_1", "output_2", "label"} <= cols:
        return "llmbar"
    if set(SCHEMA) <= cols:
        return "canonical"
    if {"conversation_a", "conversation_b"} <= cols:
        return "arena-conversations"
    if {"chosen", "rejected"} <= cols:
        return "trl"
    if {"response 1", "response 2"} <= cols:
        return "autoj"
    if {"query", "response1", "response2"} <= cols:
        return "llmeval2"
    if {"instruction", "response1", "response2"} <= cols:
        return "pandalm"
    if "prompt" in cols and ({"response_a", "response_b"} & cols or set(KAGGLE_COLUMNS) & cols):
        # (a file missing one of these columns still gets this format, which then names it)
        if "winner" in cols and not (set(KAGGLE_COLUMNS) & cols):
            return "wsdm"
        return "kaggle-lmsys"
    raise DataError(f"cannot tell the format from columns {sorted(cols)}", file=path,
                    fix=f"pass --format (one of {sorted(FORMATS)})")


def load_table(
    path: str | Path,
    format: str | None = None,
    *,
    source: str | None = None,
    strict: bool = False,
    columns: Mapping[str, Any] | None = None,
) -> PreferenceTable:
    """Read one data file (or MT-Bench folder) of any supported format."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=path)
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; known: {sorted(FORMATS)}", file=path)
    fmt = FORMATS[format]
    kwargs: dict[str, Any] = {"source": source or fmt.default_source, "strict": strict}
    if columns:
        if not fmt.takes_columns:
            raise DataError(f"format {format!r} takes no column map", file=path)
        kwargs["columns"] = columns
    return fmt.reader(path, **kwargs)
