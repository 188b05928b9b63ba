"""Judgments: what an existing judge said about each pair, read from LLMBar result files, from a
plain prefpred judgments table, or from a prefpred reward-scores file.

One row per (judge, pair), every field an array (see :class:`Judgments`):

- ``id``, ``judge`` (e.g. ``GPT-4/Vanilla``), ``subset`` (category, e.g. ``Adversarial/GPTInst``),
  ``group`` (prompt key: bootstrap clusters and calibration folds never split a group);
- ``y``: the gold class index (A, B, TIE of :mod:`prefpred.labels`) or :data:`MISSING`;
- ``verdict``: the judge's verdict with the responses shown in the file's order, and
  ``verdict_swapped``: with them shown swapped, *mapped back to the file's numbering*; each a
  class index, :data:`MISSING` (asked, no usable answer) or :data:`NOT_ASKED` (that order was
  never asked: a single-order judge, a scalar reward);
- ``logp`` / ``logp_swapped`` (n, 3): verdict-token log-probabilities in class order (a row of
  NaN when absent; a missing TIE token is ``-inf``);
- ``score_a`` / ``score_b``: scalar scores per response (NaN when absent), and ``len_a`` /
  ``len_b``: response lengths in characters (NaN when unknown).

A prefpred judgments file (CSV / TSV / JSON lines / JSON / parquet) has the columns ``id``
(required), ``label``, ``verdict``, ``verdict_swapped``, ``p_a p_b p_tie`` or ``logp_a logp_b
logp_tie`` (and ``*_swapped``), ``score_a score_b``, ``len_a len_b`` (or the texts
``response_a response_b``), ``subset``, ``group``, ``judge``; see :data:`VERDICT_WORDS` for the
verdict and label words. Every bad cell is a one-line :class:`DataError` naming file, row, column.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.errors import DataError
from prefpred.labels import CLASSES, N_CLASSES, TIE, A, B

#: Verdict codes besides the class indices.
MISSING, NOT_ASKED = -1, -2
#: Words a verdict or label cell may hold (lower-cased, stripped): the class names, model_a /
#: model_b, draw, and "1" / "2" = the first / second response of the file (LLMBar's numbering).
#: Class indices (0 / 1 / 2) are deliberately not accepted here: "1" would be ambiguous.
VERDICT_WORDS: dict[str, int] = {
    **{c.lower(): i for i, c in enumerate(CLASSES)},
    **{f"model_{c.lower()}": i for i, c in enumerate(CLASSES) if i != TIE},
    **{str(i + 1): i for i in (A, B)},
    "draw": TIE,
}
#: Cells that mean "no verdict" (asked, but the judge gave no usable answer) or "no label".
MISSING_WORDS = frozenset({"", "none", "null", "nan", "missing", "na", "n/a"})
FORMATS = ("auto", "llmbar", "prefpred")
OPTIONAL_PROBS = ("p", "logp")


@dataclass
class Judgments:
    """Row-aligned arrays, one row per (judge, pair); see the module docstring."""

    ids: np.ndarray
    judge: np.ndarray
    subset: np.ndarray
    group: np.ndarray
    y: np.ndarray
    verdict: np.ndarray
    verdict_swapped: np.ndarray
    logp: np.ndarray
    logp_swapped: np.ndarray
    score_a: np.ndarray
    score_b: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, mask: np.ndarray) -> Judgments:
        return Judgments(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    @property
    def has_scores(self) -> bool:
        return bool((np.isfinite(self.score_a) & np.isfinite(self.score_b)).any())

    @property
    def has_logp(self) -> bool:
        return bool(~np.isnan(self.logp).all())

    @property
    def has_lengths(self) -> bool:
        return bool((np.isfinite(self.len_a) & np.isfinite(self.len_b)).any())

    @property
    def gold_has_ties(self) -> bool:
        return bool((self.y == TIE).any())


def make_judgments(n: int, **values) -> Judgments:
    """A :class:`Judgments` of ``n`` rows: the given arrays, every other field absent."""
    nan = np.full(n, np.nan)
    base = {
        "ids": np.array([str(i + 1) for i in range(n)], dtype=object),
        "judge": np.full(n, "judge", dtype=object), "subset": np.full(n, "all", dtype=object),
        "group": None, "y": np.full(n, MISSING, dtype=np.int8),
        "verdict": np.full(n, NOT_ASKED, dtype=np.int8),
        "verdict_swapped": np.full(n, NOT_ASKED, dtype=np.int8),
        "logp": np.full((n, N_CLASSES), np.nan), "logp_swapped": np.full((n, N_CLASSES), np.nan),
        "score_a": nan.copy(), "score_b": nan.copy(), "len_a": nan.copy(), "len_b": nan.copy(),
    }
    for key, value in values.items():
        if key not in base:
            raise TypeError(f"unknown judgments field {key!r}")
        base[key] = value
    if base["group"] is None:
        base["group"] = np.asarray(base["ids"], dtype=object)
    for key in ("ids", "judge", "subset", "group"):
        base[key] = np.asarray(base[key], dtype=object)
    for key in ("y", "verdict", "verdict_swapped"):
        base[key] = np.asarray(base[key], dtype=np.int8)
    return Judgments(**base)


def concat(parts: Sequence[Judgments]) -> Judgments:
    if not parts:
        raise DataError("no judgments to evaluate")
    return Judgments(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                        for f in fields(Judgments)})


def prompt_key(text: str) -> str:
    """The prompt group of a pair: a short hash of its whitespace-normalised prompt."""
    return hashlib.sha1(" ".join(str(text).split()).encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- words
def verdict_code(value: object, *, file: Path, row: int, column: str) -> int:
    """A cell holding a verdict (or label) word as a class index or :data:`MISSING`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        raise DataError(f"{value!r} is not a verdict", file=file, row=row, column=column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    word = str(value).strip().lower()
    if word in MISSING_WORDS:
        return MISSING
    if word not in VERDICT_WORDS:
        raise DataError(f"{value!r} is not a known verdict", file=file, row=row, column=column,
                        fix=f"expected one of {sorted(VERDICT_WORDS)} or an empty cell")
    return VERDICT_WORDS[word]


def _codes(values: Iterable[object], file: Path, column: str) -> np.ndarray:
    return np.array([verdict_code(v, file=file, row=i + 1, column=column)
                     for i, v in enumerate(values)], dtype=np.int8)


# --------------------------------------------------------------------------- LLMBar
LLMBAR_ORDERS = ("swap = False", "swap = True")


def llmbar_names(path: Path, root: Path | None = None) -> tuple[str, str]:
    """(judge "name/strategy", subset) of ``.../<subset>/evaluators/<judge>/
    <strategy>/result.json``. The subset is the dataset folder relative to ``root`` when given,
    else its name, prefixed by its parent's name when that parent holds two or more datasets
    (LLMBar's ``Adversarial/GPTInst``)."""
    parts = path.resolve().parts
    if "evaluators" not in parts or len(parts) - parts.index("evaluators") != 4:
        raise DataError("not an LLMBar result file: expected <subset>/evaluators/<judge>/"
                        "<strategy>/result.json", file=path)
    i = len(parts) - 4
    dataset = Path(*parts[:i])
    judge = f"{parts[i + 1]}/{parts[i + 2]}"
    if root is not None and dataset != root.resolve() and dataset.is_relative_to(root.resolve()):
        return judge, dataset.relative_to(root.resolve()).as_posix()
    siblings = [p for p in dataset.parent.iterdir() if (p / "evaluators").is_dir()]
    subset = f"{dataset.parent.name}/{dataset.name}" if len(siblings) >= 2 else dataset.name
    return judge, subset


def _load_json(path: Path):
    """A JSON file; an object that repeats a key is refused (json would keep the last)."""
    from prefpred.data.raw import _loads

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read ({err})", file=path) from None
    try:
        return _loads(text, file=path, row=None)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
                        file=path) from None


def _score(cell: object, file: Path, row: int, column: str) -> float:
    """LLMBar's ``score_k``: ``["6", "stop"]``; an unparseable score (e.g. ``""`` after a
    content filter) is NaN, as LLMBar's own script treats it (no score)."""
    if not isinstance(cell, list) or not cell:
        raise DataError("expected a list like [\"6\", \"stop\"]", file=file, row=row,
                        column=column)
    try:
        return float(int(str(cell[0]).strip()))
    except ValueError:
        return math.nan


def read_llmbar(path: str | Path, root: Path | None = None) -> Judgments:
    """One LLMBar ``result.json`` (``Vanilla``-like or ``Rating``): the last entry of each row's
    ``results`` is read, as LLMBar's evaluation script does; ids are ``<subset>/<row>``."""
    file = Path(path)
    judge, subset = llmbar_names(file, root)
    data = _load_json(file)
    if not isinstance(data, list) or not data:
        raise DataError("expected a non-empty JSON array of pairs", file=file)
    n = len(data)
    y = np.empty(n, dtype=np.int8)
    v = np.empty((2, n), dtype=np.int8)
    scores = np.full((2, n), np.nan)
    lengths = np.empty((2, n))
    groups = []
    for i, rec in enumerate(data):
        row = i + 1
        if not isinstance(rec, dict):
            raise DataError("expected an object", file=file, row=row)
        for key in ("input", "output_1", "output_2", "label", "results"):
            if key not in rec:
                raise DataError(f"missing key '{key}'", file=file, row=row, column=key)
        label = rec["label"]
        if str(label).strip() not in ("1", "2") or isinstance(label, bool):
            raise DataError(f"label {label!r} is not 1 or 2", file=file, row=row, column="label")
        y[i] = VERDICT_WORDS[str(label).strip()]
        results = rec["results"]
        if not isinstance(results, list) or not results or not isinstance(results[-1], dict):
            raise DataError("expected a non-empty list whose last entry is an object",
                            file=file, row=row, column="results")
        last = results[-1]
        for k, order in enumerate(LLMBAR_ORDERS):
            column = f"results[-1]['{order}'].winner"
            if not isinstance(last.get(order), dict) or "winner" not in last[order]:
                raise DataError("missing", file=file, row=row, column=column)
            winner = last[order]["winner"]
            if winner is not None and str(winner).strip() not in ("1", "2"):
                raise DataError(f"{winner!r} is not a known verdict", file=file, row=row,
                                column=column, fix="expected \"1\", \"2\" or null")
            v[k, i] = MISSING if winner is None else VERDICT_WORDS[str(winner).strip()]
        if "score_1" in last or "score_2" in last:
            for k in (0, 1):
                column = f"results[-1].score_{k + 1}"
                if f"score_{k + 1}" not in last:
                    raise DataError("missing", file=file, row=row, column=column)
                scores[k, i] = _score(last[f"score_{k + 1}"], file, row, column)
        for column in ("input", "output_1", "output_2"):
            if not isinstance(rec[column], str):
                raise DataError("expected a string", file=file, row=row, column=column)
        for k in (0, 1):
            lengths[k, i] = len(rec[f"output_{k + 1}"])
        groups.append(prompt_key(rec["input"]))
    return make_judgments(
        n, ids=[f"{subset}/{i}" for i in range(n)], judge=np.full(n, judge, dtype=object),
        subset=np.full(n, subset, dtype=object), group=groups, y=y, verdict=v[0],
        verdict_swapped=v[1], score_a=scores[0], score_b=scores[1], len_a=lengths[0],
        len_b=lengths[1])


def find_llmbar_results(folder: Path) -> list[Path]:
    """Every ``result.json`` under ``folder`` (sorted), or a DataError when there is none."""
    found = sorted(p for p in folder.rglob("result.json") if p.is_file())
    if not found:
        raise DataError("no result.json under this folder", file=folder,
                        fix="give LLMBar result files, a folder holding them, or a judgments file")
    return found


# --------------------------------------------------------------------------- prefpred tables
def _numbers(raw: pl.DataFrame, column: str, file: Path, *, allow_inf: bool = False
             ) -> np.ndarray:
    out = np.full(raw.height, np.nan)
    for i, value in enumerate(raw[column].to_list()):
        if value is None or (isinstance(value, str) and value.strip().lower() in MISSING_WORDS):
            continue
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{value!r} is not a number", file=file, row=i + 1,
                            column=column) from None
        if math.isnan(x) or (math.isinf(x) and not (allow_inf and x < 0)):
            if math.isnan(x):
                continue
            raise DataError(f"{value!r} is not a finite number", file=file, row=i + 1,
                            column=column)
        out[i] = x
    return out


def _probabilities(raw: pl.DataFrame, file: Path, suffix: str) -> np.ndarray | None:
    """(n, 3) verdict-token log-probabilities from ``p_*`` or ``logp_*`` columns, or None."""
    names = [c.lower() for c in CLASSES]
    for kind in OPTIONAL_PROBS:
        cols = [f"{kind}_{c}{suffix}" for c in names]
        present = [c for c in cols if c in raw.columns]
        if not present:
            continue
        need = cols[:2]  # the tie token is optional (a two-way judge)
        for c in need:
            if c not in raw.columns:
                raise DataError(f"'{present[0]}' needs '{c}' too", file=file, column=c)
        out = np.full((raw.height, N_CLASSES), -np.inf)
        for k, c in enumerate(cols):
            if c not in raw.columns:
                continue
            values = _numbers(raw, c, file, allow_inf=kind == "logp")
            if kind == "p":
                bad = (values < 0) | (values > 1)
                if bad.any():
                    row = int(np.flatnonzero(bad)[0]) + 1
                    raise DataError(f"{values[row - 1]!r} is not a probability", file=file,
                                    row=row, column=c)
                with np.errstate(divide="ignore"):
                    values = np.log(values)
            elif (values > 1e-9).any():
                row = int(np.flatnonzero(values > 1e-9)[0]) + 1
                raise DataError(f"{values[row - 1]!r} is not a log-probability (<= 0)",
                                file=file, row=row, column=c)
            out[:, k] = values
        absent = np.isnan(out[:, :2]).any(1)
        out[absent] = np.nan
        return out
    return None


def _text_column(raw: pl.DataFrame, column: str, file: Path, default: Sequence[str]) -> np.ndarray:
    if column not in raw.columns:
        return np.asarray(default, dtype=object)
    s = raw[column].cast(pl.String)
    if s.is_null().any():
        raise DataError(f"{column} is missing", file=file, row=int(s.is_null().arg_true()[0]) + 1,
                        column=column)
    return np.asarray(s.to_list(), dtype=object)


def read_ids(raw: pl.DataFrame, file: Path, *, unique: bool) -> list[str]:
    """The ``id`` column as text (1.0 read as "1"); a blank id, or a repeated one when
    ``unique``, is a located DataError."""
    if "id" not in raw.columns:
        raise DataError(f"missing column 'id'; found {raw.columns}", file=file, column="id")
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, value in enumerate(raw["id"].to_list()):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = "" if value is None else str(value).strip()
        if not text:
            raise DataError("id is missing", file=file, row=i + 1, column="id")
        if unique and text in seen:
            raise DataError(f"duplicate id {text!r} (first at row {seen[text]})", file=file,
                            row=i + 1, column="id")
        seen.setdefault(text, i + 1)
        out.append(text)
    return out


def _derived_verdict(score_a: np.ndarray, score_b: np.ndarray) -> np.ndarray:
    ok = np.isfinite(score_a) & np.isfinite(score_b)
    out = np.full(len(score_a), MISSING, dtype=np.int8)
    out[ok & (score_a > score_b)] = A
    out[ok & (score_a < score_b)] = B
    out[ok & (score_a == score_b)] = TIE
    return out


def read_judgments_table(path: str | Path) -> Judgments:
    """A prefpred judgments file (columns in the module docstring) or a reward-scores file of
    :func:`prefpred.rewards.io.read_scores` (``reward_a`` / ``reward_b``: the verdict is the
    higher score, both orders alike, so only the given order is scored)."""
    from prefpred.data.raw import read_records

    file = Path(path)
    raw = read_records(file)
    ids = read_ids(raw, file, unique=False)
    n = raw.height
    if "reward_a" in raw.columns and "verdict" not in raw.columns:
        from prefpred.rewards.io import LABEL_COLUMNS, read_scores

        # a reward-scores file's numeric labels are class indices (1 = B), while "1" / "2" of a
        # judgments file name the first / second response: refuse digits rather than guess
        for col in (c for c in LABEL_COLUMNS if c in raw.columns):
            digit = raw[col].cast(pl.String).str.strip_chars().str.contains(r"^[0-9]+$")
            if digit.any():
                raise DataError("a numeric label is ambiguous in evaluate-judge", file=file,
                                row=int(digit.arg_true()[0]) + 1, column=col,
                                fix="write the labels as A / B / tie")

        data = read_scores(file)
        y = np.full(n, MISSING, dtype=np.int8) if data.y is None else data.y.astype(np.int8)
        groups = ids if data.groups is None else data.groups
        return make_judgments(n, ids=ids, judge=np.full(n, file.stem, dtype=object),
                              subset=_text_column(raw, "subset", file, ["all"] * n),
                              group=groups, y=y,
                              verdict=_derived_verdict(data.reward_a, data.reward_b),
                              score_a=data.reward_a, score_b=data.reward_b)
    values: dict[str, object] = {}
    label_col = next((c for c in ("label", "winner") if c in raw.columns), None)
    if label_col is not None:
        values["y"] = _codes(raw[label_col].to_list(), file, label_col)
    for name in ("score_a", "score_b", "len_a", "len_b"):
        if name in raw.columns:
            values[name] = _numbers(raw, name, file)
    if ("score_a" in values) != ("score_b" in values):
        missing = "score_b" if "score_a" in values else "score_a"
        raise DataError(f"missing column '{missing}' (scores come in pairs)", file=file,
                        column=missing)
    for side in ("a", "b"):
        if f"len_{side}" not in values and f"response_{side}" in raw.columns:
            values[f"len_{side}"] = np.array(
                [np.nan if t is None else len(str(t)) for t in raw[f"response_{side}"].to_list()])
    for suffix, key in (("", "logp"), ("_swapped", "logp_swapped")):
        probs = _probabilities(raw, file, suffix)
        if probs is not None:
            values[key] = probs
    if "verdict" in raw.columns:
        values["verdict"] = _codes(raw["verdict"].to_list(), file, "verdict")
    elif "score_a" in values:
        values["verdict"] = _derived_verdict(values["score_a"], values["score_b"])
    elif "logp" in values:
        lp = values["logp"]
        verdict = np.where(np.isnan(lp).any(1), MISSING, np.nan_to_num(lp, nan=-np.inf).argmax(1))
        values["verdict"] = verdict.astype(np.int8)
    else:
        raise DataError("no verdicts: expected a 'verdict' column, p_a / p_b or logp_a / logp_b, "
                        "or score_a / score_b", file=file, column="verdict")
    if "verdict_swapped" in raw.columns:
        values["verdict_swapped"] = _codes(raw["verdict_swapped"].to_list(), file,
                                           "verdict_swapped")
    judge = _text_column(raw, "judge", file, [file.stem] * n)
    seen: set[tuple[str, str]] = set()
    for i, key in enumerate(zip(judge.tolist(), ids, strict=True)):
        if key in seen:
            raise DataError(f"duplicate id {key[1]!r} for judge {key[0]!r}", file=file,
                            row=i + 1, column="id")
        seen.add(key)
    return make_judgments(n, ids=ids, judge=judge,
                          subset=_text_column(raw, "subset", file, ["all"] * n),
                          group=_text_column(raw, "group", file, ids), **values)


# --------------------------------------------------------------------------- entry points
def detect_format(path: Path) -> str:
    """``llmbar`` for a folder or a JSON array whose rows carry ``results``, else ``prefpred``."""
    if path.is_dir():
        return "llmbar"
    if path.suffix.lower() == ".json":
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1 << 20)
        if head.lstrip().startswith("[") and '"results"' in head:
            return "llmbar"
    return "prefpred"


def read_judgments(paths: Sequence[str | Path], fmt: str = "auto") -> tuple[Judgments, list[Path]]:
    """Every input (files, or folders searched for LLMBar ``result.json``) as one
    :class:`Judgments`, with the list of files read."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", fix=f"use one of {list(FORMATS)}")
    parts: list[Judgments] = []
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise DataError("file not found", file=path)
        kind = detect_format(path) if fmt == "auto" else fmt
        if path.is_dir():
            if kind != "llmbar":
                raise DataError("a folder is read as LLMBar results only", file=path,
                                fix="use --format auto or llmbar")
            for found in find_llmbar_results(path):
                parts.append(read_llmbar(found, root=path))
                files.append(found)
        elif kind == "llmbar":
            parts.append(read_llmbar(path))
            files.append(path)
        else:
            parts.append(read_judgments_table(path))
            files.append(path)
    data = concat(parts)
    keys = set()
    for judge, id_ in zip(data.judge.tolist(), data.ids.tolist(), strict=True):
        if (judge, id_) in keys:
            raise DataError(f"pair {id_!r} of judge {judge!r} is given twice (the same file "
                            "twice, or a folder and a file in it)", column="id")
        keys.add((judge, id_))
    return data, files


def apply_labels(data: Judgments, path: str | Path) -> Judgments:
    """Gold labels from a file (``id`` and ``label``, words as :data:`VERDICT_WORDS`), replacing
    any labels of the judgments. Every judged id must be in the file."""
    from prefpred.data.raw import read_records

    file = Path(path)
    raw = read_records(file)
    ids = read_ids(raw, file, unique=True)
    column = next((c for c in ("label", "winner") if c in raw.columns), None)
    if column is None:
        raise DataError(f"missing column 'label'; found {raw.columns}", file=file, column="label")
    codes = dict(zip(ids, _codes(raw[column].to_list(), file, column).tolist(), strict=True))
    unknown = [i for i in dict.fromkeys(data.ids.tolist()) if i not in codes]
    if unknown:
        raise DataError(f"{len(unknown)} judged ids are not in the labels file, e.g. "
                        f"{unknown[0]!r}", file=file, column="id",
                        fix="the labels file needs one row per judged pair id")
    y = np.array([codes[i] for i in data.ids.tolist()], dtype=np.int8)
    return Judgments(**{**{f.name: getattr(data, f.name) for f in fields(Judgments)}, "y": y})
