"""The column-mapped reader and the common tail of every reader.

:class:`ColumnMap` says which columns of a flat file (CSV, TSV, JSON lines, JSON array, parquet)
are the prompt, the responses, the label and the optional columns; :func:`read_mapped` reads any
such file (the Kaggle arena layout through a fast vectorised path). :func:`finish_table` is the
end of every reader in :mod:`prefpred.data.sources`: quirk counts, fold group keys, validation.
Labels are read with :func:`labels_from_column` (the vocabulary of :mod:`prefpred.labels`,
or a file's own) or :func:`labels_from_onehot`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from prefpred.data.raw import drop_index_columns, read_records, scan_records
from prefpred.data.table import PreferenceTable, Quirks, first_row, group_keys
from prefpred.data.text import normalise_prompt_expr, stable_digest
from prefpred.data.turns import (
    TurnEncoding,
    decode_turns,
    empty_turns_expr,
    fast_json_turns_exprs,
    patch_exact_cells,
)
from prefpred.errors import DataError
from prefpred.labels import CLASSES, LABEL_WORDS, TIE, A, B, class_index


@dataclass(frozen=True)
class ColumnMap:
    """How the columns of a flat file map onto the canonical table.

    ``label_map`` maps raw label text (compared case-insensitively) to a class (its name or
    index); without it, the vocabulary of :data:`prefpred.labels.LABEL_WORDS` is accepted.
    ``language_from`` + ``language_map`` derive a language from another column's values.
    """

    prompt: str = "prompt"
    response_a: str = "response_a"
    response_b: str = "response_b"
    id: str | None = "id"
    turns: TurnEncoding = "json"
    label: str | None = None
    label_map: Mapping[str, str | int] | None = None
    onehot: tuple[str, str, str] | None = None
    model_a: str | None = None
    model_b: str | None = None
    language: str | None = None
    language_from: str | None = None
    language_map: Mapping[str, str] = field(default_factory=dict)
    language_default: str | None = None
    weight: str | None = None
    group: str | None = None
    #: canonical names (model_a, model_b, language, weight, group) read only when present
    optional: tuple[str, ...] = ()

    def with_overrides(self, columns: Mapping[str, Any], where: str = "columns") -> ColumnMap:
        """This map with some keys replaced (a competition TOML's ``columns``), checked: an
        unknown key names the closest valid one, a wrong type is one line."""
        from dataclasses import asdict

        from pydantic import TypeAdapter, ValidationError

        from prefpred.errors import ConfigError
        from prefpred.schema import closest, config_error

        if not isinstance(columns, Mapping):
            raise ConfigError(f"{where}: expected a table of column-map keys")
        known = list(self.__dataclass_fields__)
        unknown = [k for k in columns if k not in known]
        if unknown:
            raise ConfigError(f"{where}: unknown column-map key {unknown[0]!r}"
                              f"{closest(unknown[0], known)}; valid keys: {sorted(known)}")
        try:
            cmap = TypeAdapter(ColumnMap).validate_python({**asdict(self), **columns})
        except ValidationError as err:
            raise config_error(err, ColumnMap, None, where) from None
        for word, target in (cmap.label_map or {}).items():
            try:
                class_index(target)
            except ValueError:
                raise ConfigError(f"{where}: label_map {word!r} = {target!r} is not a class of "
                                  f"{list(CLASSES)}") from None
        return cmap


def require_columns(raw: pl.DataFrame, columns: list[str | None], file: Path) -> None:
    """A located error naming the first missing column and the file's own columns."""
    missing = [c for c in columns if c is not None and c not in raw.columns]
    if missing:
        found = [c for c in raw.columns if c not in FACT_COLUMNS]
        raise DataError(f"missing column(s) {missing}; the file has {found}", file=file,
                        column=missing[0])


def whole_numbers(raw: pl.DataFrame, column: str, file: Path) -> list[int]:
    """A column of whole numbers (ints, or text / floats holding one), else a located error."""
    s = raw[column]
    if s.dtype == pl.String:
        s = s.str.strip_chars()
    num = s.cast(pl.Float64, strict=False) if s.dtype != pl.Boolean else s.cast(pl.Float64) * None
    bad = num.is_null() | ~num.is_finite() | (num != num.round()) | (num.abs() > 2**53)
    if bad.any():
        row = first_row(bad)
        raise DataError(f"{s[row - 1]!r} is not a whole number", file=file, row=row,
                        column=column)
    return num.cast(pl.Int64).to_list()


def texts(raw: pl.DataFrame, column: str, file: Path) -> list[str]:
    """A column of non-empty text values, else a located error."""
    s = raw[column]
    bad = s.is_null() if s.dtype == pl.String else pl.Series([True] * len(s))
    if s.dtype == pl.String:
        bad = bad | (s.str.strip_chars() == "")
    if bad.any():
        row = first_row(bad)
        raise DataError(f"{s[row - 1]!r} is not a text value", file=file, row=row, column=column)
    return s.to_list()


def turn_list(value: object, *, file: Path, row: int, column: str) -> list[str]:
    """A JSON value that must be a list of turns (strings; null turns read as empty text)."""
    if not isinstance(value, list) or not value or not all(
            v is None or isinstance(v, str) for v in value):
        raise DataError("expected a non-empty list of strings", file=file, row=row,
                        column=column)
    return ["" if v is None else v for v in value]


def labels_from_onehot(raw: pl.DataFrame, cols: tuple[str, str, str], file: Path) -> pl.Series | None:
    present = [c for c in cols if c in raw.columns]
    if not present:
        return None  # an unlabelled (test) file
    require_columns(raw, list(cols), file)
    values = []
    for col in cols:
        s = raw[col]
        num = s.cast(pl.Float64, strict=False) if s.dtype != pl.Float64 else s
        bad = num.is_null() | num.is_nan() | ~num.is_in([0.0, 1.0])
        if bad.any():
            row = first_row(bad)
            raise DataError(f"winner value {s[row - 1]!r} is not 0 or 1", file=file, row=row,
                            column=col)
        values.append(num)
    total = values[0] + values[1] + values[2]
    if (total == 0).any():
        row = first_row(total == 0)
        raise DataError("no winner set", file=file, row=row, column=cols[0],
                        fix=f"exactly one of {list(cols)} must be 1")
    if (total > 1).any():
        row = first_row(total > 1)
        raise DataError("more than one winner set", file=file, row=row, column=cols[0],
                        fix=f"exactly one of {list(cols)} must be 1")
    label = (
        pl.when(pl.lit(values[0]) == 1).then(pl.lit(A))
        .when(pl.lit(values[1]) == 1).then(pl.lit(B))
        .otherwise(pl.lit(TIE))
    )
    return pl.select(label.cast(pl.Int8).alias("label"))["label"]


def labels_from_column(s: pl.Series, label_map: Mapping[str, str | int] | None, file: Path,
                       column: str, quirks: Quirks | None = None) -> pl.Series:
    """Map a raw label column to class indices, with a located error for unknown values."""
    mapping: dict[str, int] = {}
    bad_target = []
    for word, target in (LABEL_WORDS if label_map is None else label_map).items():
        try:
            mapping[str(word).strip().lower()] = class_index(target)
        except ValueError:
            bad_target.append(target)
    if bad_target:
        raise DataError(f"label map targets {bad_target} are not in {list(CLASSES)}", file=file,
                        column=column)
    text = s.cast(pl.String, strict=False)
    if s.dtype in (pl.Float32, pl.Float64):  # 1.0 -> "1"
        v = s.fill_nan(None)
        whole = pl.select(pl.when(pl.lit(v) == pl.lit(v).round())
                          .then(pl.lit(v).cast(pl.Int64, strict=False))).to_series()
        text = pl.select(pl.when(pl.lit(v).is_null()).then(None)
                         .when(pl.lit(whole).is_not_null()).then(pl.lit(whole).cast(pl.String))
                         .otherwise(text)).to_series()
    key = text.str.strip_chars().str.to_lowercase()
    out = key.replace_strict(mapping, default=None, return_dtype=pl.Int8)
    bad = out.is_null()
    if bad.any():
        row = first_row(bad)
        raw_value = s[row - 1]
        expected = sorted(mapping)
        what = "missing" if raw_value is None else f"{raw_value!r} is not a known label"
        raise DataError(f"label {what}", file=file, row=row, column=column,
                        fix=f"expected one of {expected}")
    return out.alias("label")


def read_ids(raw: pl.DataFrame, id_col: str | None, file: Path, prefix: str) -> pl.Series:
    if id_col is None:
        return pl.Series("id", [f"{prefix}{i}" for i in range(1, raw.height + 1)], dtype=pl.String)
    s = raw[id_col]
    if s.dtype in (pl.Float32, pl.Float64):
        if (s.is_nan() | s.is_null()).any():
            row = first_row(s.is_nan() | s.is_null())
            raise DataError("id is missing", file=file, row=row, column=id_col)
        if (s == s.round()).all():
            s = s.cast(pl.Int64)
    s = s.cast(pl.String)
    blank = s.is_null() | (s.str.strip_chars() == "")
    if blank.any():
        raise DataError("id is missing", file=file, row=first_row(blank), column=id_col)
    return s.str.strip_chars().alias("id")


#: Per-row facts every reader needs (quirk flags, the normalised prompt), computed in one
#: parallel pass; the fast Kaggle path computes them inside its read query. A null turn counts as
#: empty text, as it will be read.
_QUIRK_FACTS = {
    "empty response_a": "__empty_response_a",
    "empty response_b": "__empty_response_b",
    "multi-turn rows": "__multi_turn",
}


def _fact_exprs() -> list[pl.Expr]:
    return [
        normalise_prompt_expr("prompt").alias("__norm"),
        empty_turns_expr("prompt").alias("__empty_prompt"),
        empty_turns_expr("response_a").alias("__empty_response_a"),
        empty_turns_expr("response_b").alias("__empty_response_b"),
        (pl.col("prompt").list.len() > 1).alias("__multi_turn"),
    ]


FACT_COLUMNS = ("__norm", "__empty_prompt", *_QUIRK_FACTS.values())
#: A row whose prompt and responses have different numbers of turns is kept as read: each part
#: keeps all its turns (the backbone renders the prompt's turns, then A's, then B's; features
#: count every turn and read each part's last turn; reward scoring alternates prompt turn i and
#: response turn i and appends the turns left over). It is counted under this quirk.
TURNS_DIFFER = "turn counts differ between prompt and responses (all turns kept)"


def finish_table(df: pl.DataFrame, *, source: str, file: Path, quirks: Quirks) -> PreferenceTable:
    """Common tail of every reader: quirk counts, group keys (unless set), validation.

    Rows with an empty prompt each get their own fold group (an empty prompt says nothing
    about which rows belong together).
    """
    if not all(c in df.columns for c in FACT_COLUMNS):
        df = df.lazy().with_columns(_fact_exprs()).collect()
    turns = pl.col("prompt").list.len()
    df = df.with_columns((pl.col("response_a") == pl.col("response_b")).alias("__identical"),
                         ((pl.col("response_a").list.len() != turns)
                          | (pl.col("response_b").list.len() != turns)).alias("__turns_differ"))
    facts = {**_QUIRK_FACTS, "identical responses": "__identical",
             TURNS_DIFFER: "__turns_differ"}
    counts = df.select([pl.col(c).sum() for c in (*facts.values(), "__empty_prompt")]).row(
        0, named=True)
    for name, col in facts.items():
        if counts[col]:
            quirks.add(name, int(counts[col]), f"row {first_row(df[col])}")
    if "group" not in df.columns:
        groups = group_keys(df["__norm"])
        if counts["__empty_prompt"]:
            empty = df["__empty_prompt"]
            quirks.add("empty prompt (own fold group)", int(counts["__empty_prompt"]),
                       f"row {first_row(empty)}")
            own = pl.Series([f"row:{stable_digest(i)}" for i in df["id"].to_list()])
            groups = pl.select(pl.when(pl.lit(empty)).then(pl.lit(own)).otherwise(pl.lit(groups)))
            groups = groups.to_series()
        df = df.with_columns(groups.alias("group"))
    df = df.drop([*FACT_COLUMNS, "__identical", "__turns_differ"])
    return PreferenceTable.from_frame(df, source=source, file=file, quirks=quirks)


def _read_json_turns_fast(path: Path, quirks: Quirks, strict: bool) -> pl.DataFrame | None:
    """One parallel read of a CSV/parquet file whose prompt/response_a/response_b hold JSON turn
    lists: decode them and compute the per-row facts in the same query, then decode exactly the
    few cells the vectorised decoder must not be trusted with. None (take the exact path) when
    polars rejects the file or a cell."""
    lazy = scan_records(path)
    if lazy is None:
        return None
    columns = ["prompt", "response_a", "response_b"]
    try:
        schema = lazy.collect_schema()
    except Exception:  # noqa: BLE001 - the exact path reports the problem
        return None
    if any(schema.get(c) != pl.String for c in columns):
        return None
    try:
        df = (lazy.with_columns([e for c in columns for e in fast_json_turns_exprs(c)])
              .with_columns(_fact_exprs()).collect())
    except Exception:  # noqa: BLE001 - malformed JSON somewhere: the exact path locates it
        return None
    if df.height == 0:
        return None
    patched: set[int] = set()
    for c in columns:
        df, rows = patch_exact_cells(df, c, file=path, quirks=quirks, strict=strict)
        patched.update(rows)
    if patched:  # the facts of patched rows were computed on the untrusted decode
        rows = pl.Series("__row", sorted(patched), dtype=pl.UInt32)
        fresh = (df[rows].lazy().with_columns(_fact_exprs()).select(FACT_COLUMNS).collect()
                 .with_columns(rows))
        df = df.with_row_index("__row").update(fresh, on="__row").drop("__row")
    return drop_index_columns(df)


def read_mapped(
    path: str | Path,
    cmap: ColumnMap,
    *,
    source: str,
    strict: bool = False,
    transform: Callable[[pl.DataFrame, Quirks], pl.DataFrame] | None = None,
) -> PreferenceTable:
    """Read a flat file whose columns ``cmap`` names."""
    path = Path(path)
    quirks = Quirks()
    canonical_names = (cmap.prompt, cmap.response_a, cmap.response_b) == (
        "prompt", "response_a", "response_b")
    raw = None
    if cmap.turns == "json" and canonical_names and transform is None:
        raw = _read_json_turns_fast(path, quirks, strict)
    if raw is None:
        raw = read_records(path, quirks=quirks, strict=strict)
    dropped = {c: None for c in cmap.optional if getattr(cmap, c) not in raw.columns}
    cmap = replace(cmap, **dropped) if dropped else cmap
    require_columns(raw, [cmap.id, cmap.prompt, cmap.response_a, cmap.response_b, cmap.model_a,
                           cmap.model_b, cmap.language, cmap.language_from, cmap.weight,
                           cmap.group], path)
    cols: dict[str, pl.Series] = {"id": read_ids(raw, cmap.id, path, f"{source}-")}
    for canon in ("prompt", "response_a", "response_b"):
        name = getattr(cmap, canon)
        cols[canon] = decode_turns(raw[name].alias(canon), column=name, encoding=cmap.turns,
                                   file=path, quirks=quirks, strict=strict)
    label = None
    if cmap.onehot:
        label = labels_from_onehot(raw, cmap.onehot, path)
    elif cmap.label and cmap.label in raw.columns:
        label = labels_from_column(raw[cmap.label], cmap.label_map, path, cmap.label, quirks)
    if label is not None:
        cols["label"] = label
    for canon in ("model_a", "model_b", "language"):
        name = getattr(cmap, canon)
        if name:
            cols[canon] = raw[name].cast(pl.String).alias(canon)
    if cmap.language_from:
        key = raw[cmap.language_from].cast(pl.String)
        cols["language"] = key.replace_strict(dict(cmap.language_map), default=cmap.language_default,
                                              return_dtype=pl.String).alias("language")
    elif cmap.language_default and "language" not in cols:
        cols["language"] = pl.Series("language", [cmap.language_default] * raw.height)
    if cmap.weight:
        w = raw[cmap.weight].cast(pl.Float64, strict=False)
        if (w.is_null() | w.is_nan() | (w <= 0)).any():
            row = first_row(w.is_null() | w.is_nan() | (w <= 0))
            raise DataError("weight must be a positive number", file=path, row=row,
                            column=cmap.weight)
        cols["weight"] = w.alias("weight")
    if cmap.group:
        cols["group"] = raw[cmap.group].cast(pl.String).alias("group")
    cols.update({c: raw[c] for c in FACT_COLUMNS if c in raw.columns})
    df = pl.DataFrame(cols)
    if transform is not None:
        df = transform(df, quirks)
    return finish_table(df, source=source, file=path, quirks=quirks)


