"""The canonical preference table every reader produces and every model consumes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.data.text import normalise_prompt_expr, stable_digest
from prefpred.errors import DataError
from prefpred.labels import N_CLASSES, SWAP_PERMUTATION, TIE, A, B

TURNS = pl.List(pl.String)
VOTES = pl.List(pl.Struct({"judge": pl.String(), "label": pl.Int8()}))

#: Column name -> dtype of the canonical table, in order.
SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "prompt": TURNS,
    "response_a": TURNS,
    "response_b": TURNS,
    "label": pl.Int8(),  # index into CLASSES; null for unlabelled (test) rows
    "soft_label": pl.Array(pl.Float64, N_CLASSES),  # optional target distribution
    "model_a": pl.String(),
    "model_b": pl.String(),
    "source": pl.String(),
    "group": pl.String(),  # fold group key: rows sharing it never cross folds
    "weight": pl.Float64(),
    "language": pl.String(),
    # False where the judgment offered no tie option ("A beat B given no tie was allowed"):
    # models score such rows with P(A) / (P(A) + P(B)).
    "tie_allowed": pl.Boolean(),
    # Every individual vote behind the label (judge name + class index), null for one-vote rows,
    # so majority, vote shares or Dawid-Skene posteriors can be rebuilt (prefpred.data.votes).
    "votes": VOTES,
}
REQUIRED = ("id", "prompt", "response_a", "response_b")


@dataclass
class Quirks:
    """Counts of real-data quirks met while loading (null turns, empty responses, ...)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, count: int = 1, example: str | None = None) -> None:
        if count <= 0:
            return
        self.counts[name] = self.counts.get(name, 0) + int(count)
        if example is not None and name not in self.examples:
            self.examples[name] = example

    def merge(self, other: Quirks) -> Quirks:
        out = Quirks(dict(self.counts), dict(self.examples))
        for name, count in other.counts.items():
            out.add(name, count, other.examples.get(name))
        return out


def first_row(mask: pl.Series) -> int:
    """The 1-based row number of the first true value of a boolean mask (for error messages)."""
    return int(mask.arg_true()[0]) + 1


def group_keys(normalised: pl.Series) -> pl.Series:
    """Fold group key per row: a stable digest of each (already normalised) prompt text."""
    uniques = normalised.unique(maintain_order=True)
    digests = pl.Series([stable_digest(s) for s in uniques.to_list()], dtype=pl.String)
    mapping = pl.DataFrame({"n": uniques, "g": digests})
    frame = pl.DataFrame({"n": normalised})
    return frame.join(mapping, on="n", how="left", maintain_order="left")["g"].alias("group")


def group_keys_from_prompt(df: pl.DataFrame) -> pl.Series:
    """Fold group key per row from the ``prompt`` turn lists."""
    return group_keys(df.lazy().select(normalise_prompt_expr("prompt").alias("n")).collect()["n"])


class PreferenceTable:
    """A polars frame with the canonical columns of :data:`SCHEMA` and their invariants.

    Rows are prompt + two responses (each a list of turns) with an optional label
    (index into :data:`prefpred.labels.CLASSES`), soft label, models, source, fold group,
    sample weight and language. Build one with :meth:`from_frame`; tables are immutable.
    """

    __slots__ = ("_df", "quirks", "origin")

    def __init__(self, df: pl.DataFrame, *, quirks: Quirks | None = None, origin: str | None = None):
        self._df = df
        self.quirks = quirks or Quirks()
        self.origin = origin

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_frame(
        cls,
        df: pl.DataFrame,
        *,
        source: str | None = None,
        file: str | Path | None = None,
        quirks: Quirks | None = None,
    ) -> PreferenceTable:
        """Fill optional columns with defaults, cast to :data:`SCHEMA` and validate."""
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}", file=file)
        defaults: dict[str, pl.Expr] = {
            "label": pl.lit(None, dtype=pl.Int8),
            "soft_label": pl.lit(None, dtype=SCHEMA["soft_label"]),
            "model_a": pl.lit(None, dtype=pl.String),
            "model_b": pl.lit(None, dtype=pl.String),
            "source": pl.lit(source or "unknown", dtype=pl.String),
            "weight": pl.lit(1.0, dtype=pl.Float64),
            "language": pl.lit(None, dtype=pl.String),
            "tie_allowed": pl.lit(True, dtype=pl.Boolean),
            "votes": pl.lit(None, dtype=VOTES),
        }
        df = df.with_columns(
            [expr.alias(name) for name, expr in defaults.items() if name not in df.columns]
        )
        if "group" not in df.columns:
            df = df.with_columns(group_keys_from_prompt(df).alias("group"))
        df = df.select([pl.col(name).cast(dtype) for name, dtype in SCHEMA.items()])
        table = cls(df, quirks=quirks, origin=str(file) if file else None)
        table.validate(file=file)
        return table

    def validate(self, file: str | Path | None = None) -> None:
        """Check the invariants; raise a located :class:`DataError` on the first violation."""
        df = self._df
        if df.height == 0:
            raise DataError("no data rows", file=file)
        ids = df["id"]
        if ids.null_count():
            raise DataError("id is missing", file=file, row=first_row(ids.is_null()), column="id")
        repeat = ~ids.is_first_distinct()
        if repeat.any():
            row = first_row(repeat)
            first = first_row(ids == ids[row - 1])
            raise DataError(
                f"duplicate id {ids[row - 1]!r} (first at row {first})", file=file, row=row,
                column="id", fix="ids must be unique within a file",
            )
        for col in ("prompt", "response_a", "response_b"):
            s = df[col]
            if s.null_count():
                raise DataError("turn list is missing", file=file, row=first_row(s.is_null()), column=col)
            empty = s.list.len() == 0
            if empty.any():
                raise DataError("turn list is empty (no turns)", file=file, row=first_row(empty), column=col)
            null_turn = s.list.eval(pl.element().is_null()).list.any()
            if null_turn.any():
                raise DataError(
                    "a turn is null", file=file, row=first_row(null_turn), column=col,
                    fix="readers replace null turns with empty strings",
                )
        label = df["label"]
        bad = label.is_not_null() & ~label.is_in(list(range(N_CLASSES)))
        if bad.any():
            raise DataError(f"label {label[first_row(bad) - 1]} is not 0, 1 or 2", file=file,
                            row=first_row(bad), column="label")
        soft = df["soft_label"]
        if soft.null_count() < df.height:
            arr = soft.to_numpy()
            present = ~soft.is_null().to_numpy()
            vals = np.asarray(arr[present], dtype=np.float64).reshape(-1, N_CLASSES)
            ok = np.isfinite(vals).all(1) & (vals >= 0).all(1) & (np.abs(vals.sum(1) - 1) < 1e-6)
            if not ok.all():
                row = int(np.flatnonzero(present)[np.flatnonzero(~ok)[0]]) + 1
                raise DataError("soft label is not a probability vector", file=file, row=row,
                                column="soft_label")
        if df["tie_allowed"].null_count():
            raise DataError("tie_allowed is missing", file=file,
                            row=first_row(df["tie_allowed"].is_null()), column="tie_allowed")
        two_class = ~df["tie_allowed"]
        if two_class.any():
            tie_label = two_class & (label == TIE).fill_null(False)
            if tie_label.any():
                raise DataError("label is TIE on a row judged without a tie option", file=file,
                                row=first_row(tie_label), column="label")
            if soft.null_count() < df.height:
                tie_mass = (soft.arr.get(TIE).fill_null(0.0) > 0) & two_class
                if tie_mass.any():
                    raise DataError("soft label gives the tie mass on a row judged without a tie "
                                    "option", file=file, row=first_row(tie_mass),
                                    column="soft_label")
        votes = df["votes"]
        if votes.null_count() < df.height:
            vote = pl.element().struct.field("label")
            bad_vote = votes.list.eval(vote.is_null() | ~vote.is_in(list(range(N_CLASSES))))
            bad_rows = bad_vote.list.any().fill_null(False) | (votes.list.len() == 0).fill_null(False)
            if bad_rows.any():
                raise DataError("a vote is missing or not 0, 1 or 2", file=file,
                                row=first_row(bad_rows), column="votes")
        weight = df["weight"]
        bad_w = weight.is_null() | weight.is_nan() | (weight <= 0) | weight.is_infinite()
        if bad_w.any():
            raise DataError("sample weight must be a positive finite number", file=file,
                            row=first_row(bad_w), column="weight")
        if df["group"].null_count():
            raise DataError("group key is missing", file=file, row=first_row(df["group"].is_null()),
                            column="group")

    # ----------------------------------------------------------------- basic access
    @property
    def df(self) -> pl.DataFrame:
        return self._df

    def __len__(self) -> int:
        return self._df.height

    def __repr__(self) -> str:
        return f"PreferenceTable(rows={len(self)}, sources={self.sources()}, labelled={self.n_labelled})"

    @property
    def ids(self) -> list[str]:
        return self._df["id"].to_list()

    @property
    def n_labelled(self) -> int:
        return self._df.height - self._df["label"].null_count()

    @property
    def is_labelled(self) -> bool:
        return self._df["label"].null_count() == 0

    def labels(self) -> np.ndarray:
        """Label indices as int64, -1 where unlabelled."""
        return self._df["label"].fill_null(-1).to_numpy().astype(np.int64)

    def require_labels(self, what: str = "training") -> np.ndarray:
        y = self.labels()
        if (y < 0).any():
            row = int(np.flatnonzero(y < 0)[0]) + 1
            raise DataError(f"{what} needs labels, but this row has none", file=self.origin,
                            row=row, column="label")
        return y

    def weights(self) -> np.ndarray:
        return self._df["weight"].to_numpy().astype(np.float64)

    def soft_labels(self) -> np.ndarray | None:
        """(n, 3) targets: the soft label where given, else one-hot of the label."""
        soft = self._df["soft_label"]
        if soft.null_count() == self._df.height:
            return None
        y = self.require_labels("soft targets")
        given = self.soft_label_rows()
        return np.where(np.isnan(given).any(1)[:, None], np.eye(N_CLASSES)[y], given)

    def soft_label_rows(self) -> np.ndarray:
        """(n, 3): each row's ``soft_label``, NaN rows where it has none."""
        out = np.full((len(self), N_CLASSES), np.nan)
        soft = self._df["soft_label"]
        if soft.null_count() < len(self):
            present = ~soft.is_null().to_numpy()
            out[present] = np.asarray(soft.to_numpy()[present], dtype=np.float64).reshape(
                -1, N_CLASSES)
        return out

    def tie_allowed(self) -> np.ndarray:
        """Boolean (n,): False where the pair was judged without a tie option."""
        return self._df["tie_allowed"].to_numpy().astype(bool)

    def allowed_classes(self) -> np.ndarray:
        """Boolean (n, 3): the classes each judgment offered (TIE only where a tie was allowed)."""
        allowed = np.ones((len(self), N_CLASSES), dtype=bool)
        allowed[:, TIE] = self.tie_allowed()
        return allowed

    def groups(self) -> np.ndarray:
        return self._df["group"].to_numpy()

    def sources(self) -> list[str]:
        return sorted(self._df["source"].unique().to_list())

    def column(self, name: str) -> pl.Series:
        return self._df[name]

    # ----------------------------------------------------------------- transformations
    def _derive(self, df: pl.DataFrame) -> PreferenceTable:
        return PreferenceTable(df, quirks=self.quirks, origin=self.origin)

    def take(self, indices: Sequence[int] | np.ndarray) -> PreferenceTable:
        idx = pl.Series("i", np.asarray(indices, dtype=np.int64))
        return self._derive(self._df[idx])

    def filter(self, mask: pl.Expr | pl.Series | np.ndarray) -> PreferenceTable:
        if isinstance(mask, np.ndarray):
            mask = pl.Series(mask.astype(bool))
        return self._derive(self._df.filter(mask))

    def with_columns(self, **columns: Any) -> PreferenceTable:
        """Replace canonical columns (e.g. ``weight=...``, ``soft_label=...``), re-validated."""
        unknown = set(columns) - set(SCHEMA)
        if unknown:
            raise ValueError(f"not canonical columns: {sorted(unknown)}")
        exprs = []
        for name, value in columns.items():
            if isinstance(value, pl.Expr):
                exprs.append(value.cast(SCHEMA[name]).alias(name))
            else:
                if isinstance(value, np.ndarray) and value.ndim == 2:
                    value = list(value)
                exprs.append(pl.Series(name, value).cast(SCHEMA[name]))
        table = self._derive(self._df.with_columns(exprs))
        table.validate(file=self.origin)
        return table

    def swap(self) -> PreferenceTable:
        """The same pairs with A and B exchanged: responses, models and labels 0<->1.

        This is the only place a pair is swapped; training augmentation and test-time
        averaging both call it.
        """
        label = pl.col("label")
        swapped_label = (
            pl.when(label == A).then(pl.lit(B, pl.Int8))
            .when(label == B).then(pl.lit(A, pl.Int8))
            .otherwise(label)
        )
        vote = pl.element().struct.field("label")
        swapped_votes = pl.col("votes").list.eval(pl.struct(
            pl.element().struct.field("judge"),
            pl.when(vote == A).then(pl.lit(B, pl.Int8)).when(vote == B).then(pl.lit(A, pl.Int8))
            .otherwise(vote).alias("label")))
        soft = pl.col("soft_label")
        swapped_soft = pl.concat_arr(*[soft.arr.get(i) for i in SWAP_PERMUTATION])
        df = self._df.with_columns(
            response_a=pl.col("response_b"),
            response_b=pl.col("response_a"),
            model_a=pl.col("model_b"),
            model_b=pl.col("model_a"),
            label=swapped_label,
            soft_label=pl.when(soft.is_null()).then(None).otherwise(swapped_soft),
            votes=swapped_votes,
        )
        return self._derive(df)

    def with_swapped(self) -> PreferenceTable:
        """Each pair followed by its swap (2n rows; ids of the swapped copies end in ``~swap``)."""
        swapped = self.swap().df.with_columns(pl.col("id") + "~swap")
        return self._derive(pl.concat([self._df, swapped]))

    @staticmethod
    def concat(tables: Iterable[PreferenceTable]) -> PreferenceTable:
        tables = list(tables)
        if not tables:
            raise ValueError("nothing to concatenate")
        quirks = Quirks()
        for t in tables:
            quirks = quirks.merge(t.quirks)
        df = pl.concat([t.df for t in tables], how="vertical")
        out = PreferenceTable(df, quirks=quirks, origin="+".join(str(t.origin) for t in tables))
        out.validate(file=out.origin)
        return out

    # ----------------------------------------------------------------- identity and storage
    def fingerprint(self) -> str:
        """SHA-256 over per-row content hashes, the schema and the polars version.

        Equal content gives an equal fingerprint whatever the memory layout; a polars upgrade
        changes it (its row hash is only stable within a version), which only invalidates caches.
        """
        h = hashlib.sha256(f"polars {pl.__version__}|{self._df.schema}".encode())
        for seed in (0, 1):
            rows = self._df.hash_rows(seed=seed)
            h.update(rows.to_numpy().tobytes())
        return h.hexdigest()

    def write_parquet(self, path: str | Path) -> None:
        from prefpred.io import atomic_path

        with atomic_path(path) as tmp:
            self._df.write_parquet(tmp)

    @classmethod
    def read_parquet(cls, path: str | Path) -> PreferenceTable:
        df = pl.read_parquet(path)
        return cls.from_frame(df, file=path)

    def texts(self, column: str, turn: str = "all", sep: str = "\n\n") -> pl.Series:
        """Turns joined into one string (``turn='last'`` gives the last turn only)."""
        s = self._df[column]
        return s.list.last() if turn == "last" else s.list.join(sep)
