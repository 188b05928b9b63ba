"""Format adapters: every supported source file becomes a :class:`PreferenceTable`.

Column-mapped formats (Kaggle arena, WSDM, Auto-J, LLMEval², any file a competition TOML maps)
share :func:`read_mapped`; formats that need joins or votes (MT-Bench, PandaLM, arena
conversations, TRL chosen/rejected) have their own reader. :func:`load_table` picks one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.data.raw import (
    drop_index_columns,
    peek_columns,
    read_jsonl,
    read_records,
    scan_records,
)
from prefpred.data.table import (
    SCHEMA,
    TURNS,
    PreferenceTable,
    Quirks,
    group_keys,
    group_keys_from_prompt,
)
from prefpred.data.text import normalise_prompt_expr, stable_digest
from prefpred.data.turns import (
    TurnEncoding,
    count_empty,
    decode_turns,
    empty_turns_expr,
    fast_json_turns_exprs,
    patch_exact_cells,
)
from prefpred.errors import DataError
from prefpred.labels import CLASSES, TIE, A, B

ONEHOT_KAGGLE = ("winner_model_a", "winner_model_b", "winner_tie")


@dataclass(frozen=True)
class ColumnMap:
    """How the columns of a flat file map onto the canonical table.

    ``label_map`` maps raw label text (compared case-insensitively) to ``A``/``B``/``TIE``;
    without it, the words A/B/TIE, model_a/model_b/tie and the indices 0/1/2 are accepted.
    ``language_from`` + ``language_map`` derive a language from another column's values.
    """

    prompt: str = "prompt"
    response_a: str = "response_a"
    response_b: str = "response_b"
    id: str | None = "id"
    turns: TurnEncoding = "json"
    label: str | None = None
    label_map: Mapping[str, str] | None = None
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnMap:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise DataError(f"unknown column-map keys {sorted(unknown)} (known: {sorted(known)})")
        data = dict(data)
        for key in ("onehot", "optional"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _first(mask: pl.Series) -> int:
    return int(mask.arg_true()[0]) + 1


def _require_columns(raw: pl.DataFrame, columns: list[str | None], file: Path) -> None:
    missing = [c for c in columns if c is not None and c not in raw.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {raw.columns}", file=file,
                        column=missing[0])


def _labels_from_onehot(raw: pl.DataFrame, cols: tuple[str, str, str], file: Path) -> pl.Series | None:
    present = [c for c in cols if c in raw.columns]
    if not present:
        return None  # an unlabelled (test) file
    _require_columns(raw, list(cols), file)
    values = []
    for col in cols:
        s = raw[col]
        num = s.cast(pl.Float64, strict=False) if s.dtype != pl.Float64 else s
        bad = num.is_null() | num.is_nan() | ~num.is_in([0.0, 1.0])
        if bad.any():
            row = _first(bad)
            raise DataError(f"winner value {s[row - 1]!r} is not 0 or 1", file=file, row=row,
                            column=col)
        values.append(num)
    total = values[0] + values[1] + values[2]
    if (total == 0).any():
        row = _first(total == 0)
        raise DataError("no winner set", file=file, row=row, column=cols[0],
                        fix=f"exactly one of {list(cols)} must be 1")
    if (total > 1).any():
        row = _first(total > 1)
        raise DataError("more than one winner set", file=file, row=row, column=cols[0],
                        fix=f"exactly one of {list(cols)} must be 1")
    label = (
        pl.when(pl.lit(values[0]) == 1).then(pl.lit(A))
        .when(pl.lit(values[1]) == 1).then(pl.lit(B))
        .otherwise(pl.lit(TIE))
    )
    return pl.select(label.cast(pl.Int8).alias("label"))["label"]


_DEFAULT_LABELS = {
    "a": "A", "model_a": "A", "0": "A",
    "b": "B", "model_b": "B", "1": "B",
    "tie": "TIE", "2": "TIE",
}


def labels_from_column(s: pl.Series, label_map: Mapping[str, str] | None, file: Path,
                       column: str, quirks: Quirks | None = None) -> pl.Series:
    """Map a raw label column to class indices, with a located error for unknown values."""
    mapping = {str(k).strip().lower(): str(v).upper() for k, v in (label_map or _DEFAULT_LABELS).items()}
    bad_target = [v for v in mapping.values() if v not in CLASSES]
    if bad_target:
        raise DataError(f"label map targets {bad_target} are not in {list(CLASSES)}", file=file,
                        column=column)
    text = s.cast(pl.String, strict=False)
    if s.dtype in (pl.Float32, pl.Float64):  # 1.0 -> "1"
        text = pl.select(
            pl.when(pl.lit(s).is_nan()).then(None)
            .when(pl.lit(s) == pl.lit(s).round()).then(pl.lit(s).cast(pl.Int64).cast(pl.String))
            .otherwise(text)
        ).to_series()
    key = text.str.strip_chars().str.to_lowercase()
    index = {c: i for i, c in enumerate(CLASSES)}
    out = key.replace_strict({k: index[v] for k, v in mapping.items()}, default=None,
                             return_dtype=pl.Int8)
    bad = out.is_null()
    if bad.any():
        row = _first(bad)
        raw_value = s[row - 1]
        expected = sorted(mapping)
        what = "missing" if raw_value is None else f"{raw_value!r} is not a known label"
        raise DataError(f"label {what}", file=file, row=row, column=column,
                        fix=f"expected one of {expected}")
    return out.alias("label")


def _ids(raw: pl.DataFrame, id_col: str | None, file: Path, prefix: str) -> pl.Series:
    if id_col is None:
        return pl.Series("id", [f"{prefix}{i}" for i in range(1, raw.height + 1)], dtype=pl.String)
    s = raw[id_col]
    if s.dtype in (pl.Float32, pl.Float64):
        if (s.is_nan() | s.is_null()).any():
            row = _first(s.is_nan() | s.is_null())
            raise DataError("id is missing", file=file, row=row, column=id_col)
        if (s == s.round()).all():
            s = s.cast(pl.Int64)
    s = s.cast(pl.String)
    blank = s.is_null() | (s.str.strip_chars() == "")
    if blank.any():
        raise DataError("id is missing", file=file, row=_first(blank), column=id_col)
    return s.str.strip_chars().alias("id")


#: Per-row facts every adapter needs (quirk flags, the normalised prompt), computed in one
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


def finish_table(df: pl.DataFrame, *, source: str, file: Path, quirks: Quirks) -> PreferenceTable:
    """Common tail of every adapter: quirk counts, group keys (unless set), validation.

    Rows with an empty prompt each get their own fold group (an empty prompt says nothing
    about which rows belong together).
    """
    if not all(c in df.columns for c in FACT_COLUMNS):
        df = df.lazy().with_columns(_fact_exprs()).collect()
    df = df.with_columns((pl.col("response_a") == pl.col("response_b")).alias("__identical"))
    facts = {**_QUIRK_FACTS, "identical responses": "__identical"}
    counts = df.select([pl.col(c).sum() for c in (*facts.values(), "__empty_prompt")]).row(
        0, named=True)
    for name, col in facts.items():
        if counts[col]:
            quirks.add(name, int(counts[col]), f"row {_first(df[col])}")
    if "group" not in df.columns:
        groups = group_keys(df["__norm"])
        if counts["__empty_prompt"]:
            empty = df["__empty_prompt"]
            quirks.add("empty prompt (own fold group)", int(counts["__empty_prompt"]),
                       f"row {_first(empty)}")
            own = pl.Series([f"row:{stable_digest(i)}" for i in df["id"].to_list()])
            groups = pl.select(pl.when(pl.lit(empty)).then(pl.lit(own)).otherwise(pl.lit(groups)))
            groups = groups.to_series()
        df = df.with_columns(groups.alias("group"))
    df = df.drop([*FACT_COLUMNS, "__identical"])
    return PreferenceTable.from_frame(df, source=source, file=file, quirks=quirks)


def _read_kaggle_layout_fast(path: Path, quirks: Quirks, strict: bool) -> pl.DataFrame | None:
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
    raw: pl.DataFrame | None = None,
    transform: Callable[[pl.DataFrame, Quirks], pl.DataFrame] | None = None,
) -> PreferenceTable:
    """Read a flat file whose columns ``cmap`` names."""
    path = Path(path)
    quirks = Quirks()
    canonical_names = (cmap.prompt, cmap.response_a, cmap.response_b) == (
        "prompt", "response_a", "response_b")
    if raw is None and cmap.turns == "json" and canonical_names and transform is None:
        raw = _read_kaggle_layout_fast(path, quirks, strict)
    raw = read_records(path, quirks=quirks, strict=strict) if raw is None else raw
    dropped = {c: None for c in cmap.optional if getattr(cmap, c) not in raw.columns}
    cmap = replace(cmap, **dropped) if dropped else cmap
    _require_columns(raw, [cmap.id, cmap.prompt, cmap.response_a, cmap.response_b, cmap.model_a,
                           cmap.model_b, cmap.language, cmap.language_from, cmap.weight,
                           cmap.group], path)
    cols: dict[str, pl.Series] = {"id": _ids(raw, cmap.id, path, f"{source}-")}
    for canon in ("prompt", "response_a", "response_b"):
        name = getattr(cmap, canon)
        cols[canon] = decode_turns(raw[name].alias(canon), column=name, encoding=cmap.turns,
                                   file=path, quirks=quirks, strict=strict)
    label = None
    if cmap.onehot:
        label = _labels_from_onehot(raw, cmap.onehot, path)
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
            row = _first(w.is_null() | w.is_nan() | (w <= 0))
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


# --------------------------------------------------------------------------- presets
KAGGLE_LMSYS = ColumnMap(onehot=ONEHOT_KAGGLE, model_a="model_a", model_b="model_b")
WSDM = ColumnMap(turns="text", label="winner", label_map={"model_a": "A", "model_b": "B"},
                 model_a="model_a", model_b="model_b", language="language",
                 optional=("model_a", "model_b", "language"))
KAGGLE_LMSYS = replace(KAGGLE_LMSYS, optional=("model_a", "model_b"))
AUTOJ = ColumnMap(id=None, response_a="response 1", response_b="response 2", turns="text",
                  label="label", label_map={"0": "A", "1": "B", "2": "TIE"})
LLMEVAL2 = ColumnMap(
    id=None, prompt="query", response_a="response1", response_b="response2", turns="text",
    label="human", label_map={"model1": "A", "model2": "B", "tie": "TIE"},
    language_from="dataset",
    language_map={"rlhf-reward-chinese": "zh", "rlhf-reward-russian": "ru",
                  "reward-aira-portuguese": "pt"},
    language_default="en",
)

_ROLE_SPLIT = re.compile(r"(?:^|\n\n)(user|assistant): ", re.IGNORECASE)


def split_transcript(text: str) -> tuple[list[str], list[str]] | None:
    """Split ``"user: ...\\n\\nassistant: ..."`` into (user turns, assistant turns), or None."""
    if not text.lower().startswith("user: "):
        return None
    parts = _ROLE_SPLIT.split(text)
    # parts: ["", role, body, role, body, ...]
    if parts[0] != "" or len(parts) < 3:
        return None
    users, assistants = [], []
    expected = "user"
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        role = role.lower()
        if role != expected:
            return None
        (users if role == "user" else assistants).append(body)
        expected = "assistant" if role == "user" else "user"
    if len(assistants) < len(users) - 1 or not assistants:
        return None
    return users, assistants


def _llmeval2_transcripts(df: pl.DataFrame, quirks: Quirks) -> pl.DataFrame:
    """LLMEval² MT-Bench rows have an empty query and whole transcripts as responses.

    Where both responses are transcripts with the same user turns, the user turns become the
    prompt and the assistant turns the responses.
    """
    empty = count_empty(df["prompt"])
    if not empty.any():
        return df
    prompts, ras, rbs = df["prompt"].to_list(), df["response_a"].to_list(), df["response_b"].to_list()
    fixed = 0
    for i in np.flatnonzero(empty.to_numpy()):
        a = split_transcript(ras[i][0])
        b = split_transcript(rbs[i][0])
        if a and b and a[0] == b[0]:
            prompts[i], ras[i], rbs[i] = a[0], a[1], b[1]
            fixed += 1
    quirks.add("empty query, prompt recovered from user/assistant transcripts", fixed)
    return df.with_columns(
        pl.Series("prompt", prompts, dtype=TURNS),
        pl.Series("response_a", ras, dtype=TURNS),
        pl.Series("response_b", rbs, dtype=TURNS),
    )


# --------------------------------------------------------------------------- PandaLM
def read_pandalm(path: str | Path, *, source: str = "pandalm", strict: bool = False,
                 raw: pl.DataFrame | None = None) -> PreferenceTable:
    """PandaLM test set: prompt = instruction + input; label = majority of three annotators
    (0 = tie, 1 = response1, 2 = response2); weight = share of annotators agreeing with it.
    Three-way disagreement gives a tie with weight 1/3. A bare ``NaN`` input counts as absent.
    """
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict) if raw is None else raw
    annot = [c for c in raw.columns if re.fullmatch(r"annotator\d+", c)]
    _require_columns(raw, ["instruction", "input", "response1", "response2"], path)
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
            row = _first(bad)
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
    })
    if "cmp_key" in raw.columns:
        models = raw["cmp_key"].cast(pl.String).str.split_exact("_", 1)
        df = df.with_columns(model_a=models.struct.field("field_0"),
                             model_b=models.struct.field("field_1"))
    return finish_table(df, source=source, file=path, quirks=quirks)


# --------------------------------------------------------------------------- MT-Bench
_MT_WINNER = {"model_a": "A", "model_b": "B", "tie": "TIE", "tie (inconsistent)": "TIE",
              "tie (bothbad)": "TIE"}


def _mt_bench_files(path: Path) -> tuple[Path, Path, Path]:
    if path.is_dir():
        judgments = sorted(path.glob("human_judgments*.jsonl")) or sorted(path.glob("*judgment*.jsonl"))
        if not judgments:
            raise DataError("no human_judgments*.jsonl in the MT-Bench folder", file=path)
        judg = judgments[0]
        base = path
    else:
        judg, base = path, path.parent
    question, answers = base / "question.jsonl", base / "model_answer"
    if not question.exists():
        raise DataError("MT-Bench needs question.jsonl beside the judgments", file=question)
    if not answers.is_dir():
        raise DataError("MT-Bench needs a model_answer/ folder beside the judgments", file=answers)
    return judg, question, answers


def read_mt_bench(path: str | Path, *, source: str = "mt-bench-human", strict: bool = False
                  ) -> PreferenceTable:
    """FastChat MT-Bench human judgments joined with questions and model answers.

    Each vote is one row (several judges vote on the same pair). A ``turn`` field of 2 makes a
    two-turn prompt. The fold group is the question, so one question never crosses folds.
    """
    judg, question_file, answer_dir = _mt_bench_files(Path(path))
    quirks = Quirks()
    votes = read_jsonl(judg, quirks=quirks, strict=strict)
    _require_columns(votes, ["question_id", "model_a", "model_b", "winner"], judg)
    questions = read_jsonl(question_file, quirks=quirks, strict=strict)
    _require_columns(questions, ["question_id", "turns"], question_file)
    q_turns = dict(zip(questions["question_id"].cast(pl.Int64).to_list(),
                       questions["turns"].to_list(), strict=True))
    answers: dict[tuple[str, int], list[str]] = {}
    for file in sorted(answer_dir.glob("*.jsonl")):
        for i, rec in enumerate(read_jsonl(file, quirks=quirks, strict=strict).to_dicts(), 1):
            try:
                answers[(rec.get("model_id") or file.stem, int(rec["question_id"]))] = \
                    rec["choices"][0]["turns"]
            except (KeyError, IndexError, TypeError):
                raise DataError("expected question_id and choices[0].turns", file=file,
                                row=i) from None
    turn_col = (votes["turn"].cast(pl.Int64, strict=False).fill_null(1).to_list()
                if "turn" in votes.columns else [1] * votes.height)
    judges = votes["judge"].cast(pl.String).to_list() if "judge" in votes.columns else [""] * votes.height
    rows: dict[str, list] = {k: [] for k in ("id", "prompt", "response_a", "response_b", "model_a",
                                             "model_b", "first_turn")}
    for i, (qid, ma, mb, judge, turn) in enumerate(zip(
            votes["question_id"].cast(pl.Int64).to_list(), votes["model_a"].to_list(),
            votes["model_b"].to_list(), judges, turn_col, strict=True), 1):
        if qid not in q_turns:
            raise DataError(f"question {qid} is not in {question_file.name}", file=judg, row=i,
                            column="question_id")
        if turn not in (1, 2):
            raise DataError(f"turn {turn} is not 1 or 2", file=judg, row=i, column="turn")
        for col, model in (("model_a", ma), ("model_b", mb)):
            if (model, qid) not in answers:
                raise DataError(f"no answer by {model} to question {qid} in {answer_dir}",
                                file=judg, row=i, column=col)
        rows["id"].append(f"mtbench-q{qid}-t{turn}-{ma}-vs-{mb}-{judge or i}")
        rows["prompt"].append(q_turns[qid][:turn])
        rows["response_a"].append(answers[(ma, qid)][:turn])
        rows["response_b"].append(answers[(mb, qid)][:turn])
        rows["model_a"].append(ma)
        rows["model_b"].append(mb)
        rows["first_turn"].append(q_turns[qid][:1])
    label = labels_from_column(votes["winner"], _MT_WINNER, judg, "winner")
    df = pl.DataFrame({k: v for k, v in rows.items()},
                      schema_overrides={"prompt": TURNS, "response_a": TURNS, "response_b": TURNS,
                                        "first_turn": TURNS})
    # Group by the question's first turn, normalised exactly like every other prompt, so that
    # the same question in another source (Auto-J reuses MT-Bench questions) shares the group.
    group = group_keys_from_prompt(df.select(pl.col("first_turn").alias("prompt")))
    df = df.drop("first_turn").with_columns(label=label, group=group, language=pl.lit("en"))
    return finish_table(df, source=source, file=judg, quirks=quirks)


# --------------------------------------------------------------------------- arena conversations
_ARENA_WINNER = {"model_a": "A", "model_b": "B", "tie": "TIE", "tie (bothbad)": "TIE",
                 "both_bad": "TIE", "bothbad": "TIE"}


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # newer arena sets: [{"type": "text", "text": ...}, ...]
        return "".join(_message_text(part.get("text") if isinstance(part, dict) else part)
                       for part in content)
    if isinstance(content, dict):
        return _message_text(content.get("text", ""))
    return str(content)


def _split_conversation(conv: Any, file: Path, row: int, column: str) -> tuple[list[str], list[str]]:
    if isinstance(conv, str):
        try:
            conv = json.loads(conv)
        except json.JSONDecodeError as err:
            raise DataError(f"malformed JSON ({err.msg})", file=file, row=row, column=column) from None
    if not isinstance(conv, list) or not conv:
        raise DataError("expected a list of {role, content} messages", file=file, row=row,
                        column=column)
    users, assistants = [], []
    for msg in conv:
        if not isinstance(msg, dict) or "role" not in msg:
            raise DataError("a message has no role", file=file, row=row, column=column)
        text = _message_text(msg.get("content"))
        role = str(msg["role"]).lower()
        if role in ("user", "human"):
            users.append(text)
        elif role in ("assistant", "gpt", "model", "bot"):
            assistants.append(text)
        elif role != "system":
            raise DataError(f"unknown role {msg['role']!r}", file=file, row=row, column=column)
    if not users:
        raise DataError("conversation has no user turn", file=file, row=row, column=column)
    return users, assistants or [""]


def read_arena_conversations(path: str | Path, *, source: str = "arena", strict: bool = False,
                             raw: pl.DataFrame | None = None) -> PreferenceTable:
    """Arena sets with ``conversation_a`` / ``conversation_b`` message lists and a ``winner``
    of model_a / model_b / tie / both_bad (``tie (bothbad)`` in chatbot_arena_conversations).
    Both-bad votes count as ties (a quirk the inspector reports)."""
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict) if raw is None else raw
    _require_columns(raw, ["conversation_a", "conversation_b"], path)
    id_col = "id" if "id" in raw.columns else ("question_id" if "question_id" in raw.columns else None)
    ids = _ids(raw, id_col, path, f"{source}-")
    if id_col == "question_id" and ids.is_duplicated().any():  # one question, several battles
        ids = ids + "-" + pl.Series([str(i) for i in range(1, raw.height + 1)])
    prompts, ras, rbs = [], [], []
    for i, (ca, cb) in enumerate(zip(raw["conversation_a"].to_list(), raw["conversation_b"].to_list(),
                                     strict=True), 1):
        ua, aa = _split_conversation(ca, path, i, "conversation_a")
        _ub, ab = _split_conversation(cb, path, i, "conversation_b")
        prompts.append(ua)
        ras.append(aa)
        rbs.append(ab)
    cols: dict[str, Any] = {"id": ids}
    for name, values in (("prompt", prompts), ("response_a", ras), ("response_b", rbs)):
        cols[name] = decode_turns(pl.Series(name, values, dtype=TURNS), column=name, encoding="json",
                                  file=path, quirks=quirks, strict=strict)
    if "winner" in raw.columns:
        winner = raw["winner"].cast(pl.String)
        both_bad = winner.str.to_lowercase().str.contains("bad").fill_null(False)
        quirks.add("both-bad votes counted as ties", int(both_bad.sum()))
        cols["label"] = labels_from_column(winner, _ARENA_WINNER, path, "winner")
    for name in ("model_a", "model_b", "language"):
        if name in raw.columns:
            cols[name] = raw[name].cast(pl.String)
    return finish_table(pl.DataFrame(cols), source=source, file=path, quirks=quirks)


# --------------------------------------------------------------------------- TRL chosen/rejected
def _as_messages(value: Any) -> list | None:
    """A message list, from a list or a JSON-encoded list of {role, content}; else None."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return None


def read_trl_pairs(path: str | Path, *, source: str = "trl", strict: bool = False,
                   raw: pl.DataFrame | None = None) -> PreferenceTable:
    """TRL preference data: ``chosen`` / ``rejected`` (text or message lists), with an optional
    ``prompt`` (text or messages). Without a prompt, the user turns of ``chosen`` are the prompt.

    Which of the pair becomes response A is decided by a stable hash of the row id, so labels are
    balanced between A and B (never all A) and the same file always gives the same table.
    """
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict) if raw is None else raw
    _require_columns(raw, ["chosen", "rejected"], path)
    ids = _ids(raw, "id" if "id" in raw.columns else None, path, f"{source}-")
    has_prompt = "prompt" in raw.columns
    prompt_vals = raw["prompt"].to_list() if has_prompt else [None] * raw.height
    prompts, ras, rbs, labels = [], [], [], []
    for i, (rid, p, ch, rj) in enumerate(zip(ids.to_list(), prompt_vals, raw["chosen"].to_list(),
                                             raw["rejected"].to_list(), strict=True), 1):
        if p is None and has_prompt:
            raise DataError("prompt is missing", file=path, row=i, column="prompt")
        if ch is None or rj is None:
            col = "chosen" if ch is None else "rejected"
            raise DataError("text is missing", file=path, row=i, column=col)
        ch_msgs, rj_msgs = _as_messages(ch), _as_messages(rj)
        if ch_msgs is not None and rj_msgs is not None:
            users, chosen = _split_conversation(ch_msgs, path, i, "chosen")
            _u, rejected = _split_conversation(rj_msgs, path, i, "rejected")
        else:
            users, chosen, rejected = [], [str(ch)], [str(rj)]
        if has_prompt:
            p_msgs = _as_messages(p)
            users = _split_conversation(p_msgs, path, i, "prompt")[0] if p_msgs else [str(p)]
        if not users:
            raise DataError("no prompt: add a prompt column or use message lists", file=path,
                            row=i, column="prompt")
        chosen_is_a = int(stable_digest(rid, 2), 16) % 2 == 0
        prompts.append(users)
        ras.append(chosen if chosen_is_a else rejected)
        rbs.append(rejected if chosen_is_a else chosen)
        labels.append(A if chosen_is_a else B)
    df = pl.DataFrame({
        "id": ids,
        "prompt": pl.Series(prompts, dtype=TURNS),
        "response_a": pl.Series(ras, dtype=TURNS),
        "response_b": pl.Series(rbs, dtype=TURNS),
        "label": pl.Series(labels, dtype=pl.Int8),
    })
    return finish_table(df, source=source, file=path, quirks=quirks)


def read_canonical(path: str | Path, *, source: str | None = None, strict: bool = False
                   ) -> PreferenceTable:
    """A table written by :meth:`PreferenceTable.write_parquet` (sources kept per row)."""
    return PreferenceTable.read_parquet(path)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Format:
    name: str
    description: str
    reader: Callable[..., PreferenceTable]
    default_source: str


def _mapped(cmap: ColumnMap, transform=None) -> Callable[..., PreferenceTable]:
    def reader(path, *, source, strict=False, raw=None, columns: Mapping[str, Any] | None = None):
        cm = replace(cmap, **dict(columns)) if columns else cmap
        return read_mapped(path, cm, source=source, strict=strict, raw=raw, transform=transform)

    return reader


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("kaggle-lmsys", "Kaggle LMSYS arena train/test.csv or the HF 55k parquet "
               "(JSON turn lists, one-hot winner columns)", _mapped(KAGGLE_LMSYS), "lmsys-kaggle"),
        Format("wsdm", "WSDM Cup multilingual arena (plain-text prompt/responses, winner "
               "model_a/model_b, language)", _mapped(WSDM), "wsdm"),
        Format("arena-conversations", "arena sets with conversation_a/_b message lists and "
               "winner (tie, both_bad, tie (bothbad))", read_arena_conversations, "arena"),
        Format("mt-bench", "FastChat MT-Bench human judgments + questions + model answers (folder)",
               read_mt_bench, "mt-bench-human"),
        Format("autoj", "Auto-J pairwise test data (scenario, prompt, response 1/2, label 0/1/2)",
               _mapped(AUTOJ), "autoj-pairwise"),
        Format("pandalm", "PandaLM test set (instruction, input, response1/2, annotator votes)",
               read_pandalm, "pandalm"),
        Format("llmeval2", "LLMEval² benchmark (query, response1/2, human model1/model2/TIE, dataset)",
               _mapped(LLMEVAL2, _llmeval2_transcripts), "llmeval2"),
        Format("trl", "TRL chosen/rejected pairs (text or message lists)", read_trl_pairs, "trl"),
        Format("mapped", "any CSV/JSONL/parquet whose columns a competition TOML maps",
               _mapped(ColumnMap()), "custom"),
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
        raise DataError("cannot tell the format of this folder", file=path,
                        fix="pass --format")
    if path.name.startswith("human_judgments") or (path.parent / "question.jsonl").exists() and \
            path.name != "question.jsonl":
        return "mt-bench"
    cols = set(peek_columns(path))
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
    if "prompt" in cols and ({"response_a", "response_b"} & cols or set(ONEHOT_KAGGLE) & cols):
        # (a file missing one of these columns still gets this format, which then names it)
        if "winner" in cols and not (set(ONEHOT_KAGGLE) & cols):
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
        if fmt.reader.__name__ != "reader":
            raise DataError(f"format {format!r} takes no column map", file=path)
        kwargs["columns"] = columns
    return fmt.reader(path, **kwargs)
