"""Property-based fuzzing (Hypothesis) of every reader, the submission validator, the scores
reader and the configuration loaders: real rows from ../shared/data are mutated (columns dropped,
repeated or renamed; types changed; NaN, inf, huge and empty values injected; the file cut short)
and every run must either succeed with a valid result or fail with one line naming the file, and
write nothing. Derandomised and bounded so the suite stays fast and reproducible."""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import AUTOJ, KAGGLE, LLMEVAL2, PANDALM, PROJECT_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefpred.errors import PrefpredError

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

#: Values a cell may be replaced with: missing, non-finite, huge, empty, wrong types, garbage.
BAD_VALUES = [None, "", " ", "NaN", "nan", "inf", "-inf", "1e309", "-1", "3", "0.5", "[]", "{}",
              "[null]", '["a", 1]', '["unterminated', "null", "true", "A", "tie", "TIE",
              "model_c", "x" * 5000, "\ud83d", "é", 12, 2.5, float("nan"), float("inf"), True,
              [], {"a": 1}, ["x", None]]


def _records(path: Path, n: int = 10) -> list[dict]:
    """The first ``n`` records of a real file, as Python values (cells of a CSV as text)."""
    suffix = path.suffix
    if suffix == ".csv":
        return pl.read_csv(path, infer_schema=False).head(n).to_dicts()
    if suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()[:n]
        return [json.loads(line) for line in lines]
    return json.loads(path.read_text(encoding="utf-8"))[:n]


@st.composite
def mutated(draw, records: list[dict]):
    """Records with up to four mutations, and an optional cut of the serialised file."""
    rows = [dict(r) for r in records]
    columns = list(rows[0])
    steps = draw(st.lists(st.sampled_from(["drop", "repeat", "rename", "cell", "cell", "cell",
                                           "row"]), min_size=1, max_size=4))
    repeated = None
    for step in steps:
        col = draw(st.sampled_from(columns))
        if step == "drop" and len(columns) > 1:
            columns.remove(col)
        elif step == "repeat":
            repeated = col
        elif step == "rename":
            new = draw(st.sampled_from([col.upper(), col + "_x", col[:-1] or "z", "id"]))
            if new not in columns:
                columns[columns.index(col)] = new
                for r in rows:
                    r[new] = r.pop(col, None)
        elif step == "cell":
            i = draw(st.integers(0, len(rows) - 1))
            rows[i][col] = draw(st.sampled_from(BAD_VALUES))
        elif step == "row" and len(rows) > 1:
            i = draw(st.integers(0, len(rows) - 1))
            rows.append(dict(rows[i]))
    cut = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return rows, columns, repeated, cut


def _serialise(path: Path, rows: list[dict], columns: list[str], repeated: str | None,
               cut: float | None) -> None:
    header = columns + ([repeated] if repeated in columns else [])
    if path.suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else
                             (r.get(c) if isinstance(r.get(c), str) else json.dumps(r.get(c)))
                             for c in header])
        text = buf.getvalue()
    else:
        def obj(r):
            body = ", ".join(f"{json.dumps(c)}: {json.dumps(r.get(c), allow_nan=True)}"
                             for c in header)
            return "{" + body + "}"
        objects = [obj(r) for r in rows]
        text = ("\n".join(objects) + "\n" if path.suffix == ".jsonl"
                else "[" + ",\n".join(objects) + "]")
    data = text.encode("utf-8", "surrogatepass")
    if cut is not None:
        data = data[:int(len(data) * cut)]
    path.write_bytes(data)


def _check_failure(err: PrefpredError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message and message.strip()
    assert path.name in message or "format" in message or "column" in message, message


READERS = [(KAGGLE, "train.csv", "kaggle-lmsys"), (AUTOJ, "t.jsonl", "autoj"),
           (PANDALM, "t.json", "pandalm"), (LLMEVAL2, "t.jsonl", "llmeval2")]


@pytest.mark.parametrize("source,name,fmt", READERS, ids=[r[2] for r in READERS])
def test_readers_either_read_a_valid_table_or_fail_in_one_line(tmp_path_factory, source, name,
                                                               fmt):
    from prefpred.data.formats import load_table

    records = _records(source)

    @FUZZ
    @given(case=mutated(records), detect=st.booleans())
    def check(case, detect):
        path = tmp_path_factory.mktemp("fuzz") / name
        _serialise(path, *case)
        try:
            table = load_table(path, None if detect else fmt)
        except PrefpredError as err:
            _check_failure(err, path)
            return
        table.validate()
        assert len(set(table.ids)) == len(table)
        labels = table.labels()
        assert ((labels >= -1) & (labels <= 2)).all()
        assert table.df["prompt"].list.len().min() >= 1

    check()


def _conversation_records(n: int = 10) -> tuple[list[dict], list[dict]]:
    """Real Kaggle rows as arena-conversation records and as TRL chosen/rejected records."""
    def conv(prompt: list, response: list) -> list[dict]:
        return [m for p, x in zip(prompt, response, strict=False)
                for m in ({"role": "user", "content": p}, {"role": "assistant", "content": x})]

    arena, trl = [], []
    for i, r in enumerate(pl.read_csv(KAGGLE, infer_schema=False).head(n).to_dicts()):
        prompt, a, b = (json.loads(r[c]) for c in ("prompt", "response_a", "response_b"))
        arena.append({"question_id": str(i), "conversation_a": conv(prompt, a),
                      "conversation_b": conv(prompt, b),
                      "winner": ["model_a", "model_b", "tie", "both_bad"][i % 4]})
        trl.append({"prompt": prompt[0], "chosen": a[0] or "x", "rejected": b[0] or "y"})
    return arena, trl


def fuzz_reader(tmp_path_factory, records: list[dict], name: str, kind: str, also=None) -> None:
    """Mutated ``records`` saved as ``name`` are read by format ``kind`` into a valid table
    (checked further by ``also(table)``) or refused in one line."""
    from prefpred.data.formats import load_table

    @FUZZ
    @given(case=mutated(records))
    def check(case):
        path = tmp_path_factory.mktemp("reader") / name
        _serialise(path, *case)
        try:
            table = load_table(path, kind)
        except PrefpredError as err:
            _check_failure(err, path)
            return
        table.validate()
        if also is not None:
            also(table)

    check()


@pytest.mark.parametrize("kind", ["arena-conversations", "trl"])
def test_conversation_readers(tmp_path_factory, kind):
    records = _conversation_records()[0 if kind == "arena-conversations" else 1]
    fuzz_reader(tmp_path_factory, records, "c.jsonl", kind)


def test_the_mt_bench_reader_on_mutated_judgments(tmp_path_factory):
    import shutil

    from conftest import MT_BENCH

    from prefpred.data.formats import load_table

    records = _records(MT_BENCH / "human_judgments_turn1.jsonl", 12)

    @FUZZ
    @given(case=mutated(records))
    def check(case):
        folder = tmp_path_factory.mktemp("mt")
        shutil.copy(MT_BENCH / "question.jsonl", folder / "question.jsonl")
        (folder / "model_answer").symlink_to(MT_BENCH / "model_answer")
        path = folder / "human_judgments.jsonl"
        _serialise(path, *case)
        try:
            table = load_table(folder)
        except PrefpredError as err:
            _check_failure(err, folder)
            return
        table.validate()

    check()


# ------------------------------------------------------------------------- the validator
@pytest.fixture(scope="module")
def test_file(tmp_path_factory):
    base = tmp_path_factory.mktemp("validator")
    raw = pl.read_csv(KAGGLE, infer_schema=False).head(8).select(
        "id", "prompt", "response_a", "response_b")
    raw.write_csv(base / "test.csv")
    return base / "test.csv"


def _grader_accepts(sub: Path, test: Path) -> bool:
    """mle-bench's LMSYS grader rules, with pandas, as an independent oracle."""
    import pandas as pd

    try:
        s, t = pd.read_csv(sub), pd.read_csv(test)
    except Exception:  # noqa: BLE001 - the grader cannot read it either
        return False
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    if set(s.columns) != {"id", *cols} or len(s) != len(t):
        return False
    try:
        values = s[cols].astype(float)
    except (TypeError, ValueError):
        return False
    if not ((values >= 0) & (values <= 1)).all().all():
        return False
    if not values.sum(axis=1).round(6).eq(1).all():
        return False
    try:
        return bool((s.sort_values("id")["id"].astype(str).str.strip().values
                     == t.sort_values("id")["id"].astype(str).values).all())
    except TypeError:
        return False


def test_the_validator_never_accepts_what_the_grader_rejects(tmp_path_factory, test_file):
    from prefpred.competitions import load_competition
    from prefpred.errors import SubmissionError
    from prefpred.submission import validate_submission

    comp = load_competition("lmsys-chatbot-arena")
    ids = pl.read_csv(test_file, infer_schema=False)["id"].to_list()
    p = np.random.default_rng(0).dirichlet([1, 1, 1], size=len(ids))
    records = [{"id": i, "winner_model_a": f"{a:.6f}", "winner_model_b": f"{b:.6f}",
                "winner_tie": f"{1 - round(a, 6) - round(b, 6):.6f}"}
               for i, (a, b, _) in zip(ids, p, strict=True)]

    @FUZZ
    @given(case=mutated(records))
    def check(case):
        path = tmp_path_factory.mktemp("sub") / "sub.csv"
        _serialise(path, *case)
        try:
            validate_submission(path, comp, test_ids=ids)
        except SubmissionError as err:
            _check_failure(err, path)
            return
        assert _grader_accepts(path, test_file), path.read_text()[:500]

    check()


# ------------------------------------------------------------------------- scores files
def test_the_scores_reader(tmp_path_factory):
    from prefpred.rewards.io import read_scores

    rng = np.random.default_rng(1)
    records = [{"id": str(i), "reward_a": float(a), "reward_b": float(b), "label": lab,
                "group": f"g{i % 4}", "weight": 1.0}
               for i, (a, b, lab) in enumerate(zip(rng.normal(size=10), rng.normal(size=10),
                                                   ["A", "B", "tie", "a", "0"] * 2,
                                                   strict=True))]

    @FUZZ
    @given(case=mutated(records), suffix=st.sampled_from([".csv", ".jsonl"]))
    def check(case, suffix):
        path = tmp_path_factory.mktemp("scores") / f"s{suffix}"
        _serialise(path, *case)
        try:
            scores = read_scores(path, require_labels=True)
        except PrefpredError as err:
            _check_failure(err, path)
            return
        assert np.isfinite(scores.margin).all() and len(set(scores.ids)) == len(scores)
        assert ((scores.y >= 0) & (scores.y <= 2)).all()

    check()


# ------------------------------------------------------------------------- configuration files
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"


def _toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer (tables, arrays of tables, inline values)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables.append(("[" + key + "]", item))
        else:
            lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + "\n"
    for key, value in tables:
        name = key if key.startswith("[") else f"{prefix}{key}"
        header = f"[{name}]" if not name.startswith("[") else f"[{name}]"
        out += f"\n{header}\n" + _toml(value, f"{name.strip('[]')}.")
    return out


TOML_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from(["", "../x", "auto", "none", "prior", "lgbm", "x" * 300,
                                         "minilm-budget", "blend", "temperature"]),
                        st.lists(st.sampled_from(["blend", "vector", 1, "logistic"]),
                                 max_size=3),
                        st.fixed_dictionaries({"k": st.integers()}))


@st.composite
def mutated_toml(draw, data: dict):
    """A configuration table with keys dropped, misspelt or given values of any type."""
    data = json.loads(json.dumps(data))
    for _ in range(draw(st.integers(1, 3))):
        tables = [data] + [v for v in data.values() if isinstance(v, dict)] + [
            item for v in data.values() if isinstance(v, list) for item in v
            if isinstance(item, dict)]
        table = draw(st.sampled_from(tables))
        if not table:
            continue
        key = draw(st.sampled_from(sorted(table)))
        action = draw(st.sampled_from(["drop", "typo", "value", "value"]))
        if action == "drop":
            table.pop(key)
        elif action == "typo":
            table[key[:-1] + key[-1].upper() + "x"] = table.pop(key)
        else:
            value = draw(TOML_VALUES)
            if value is None:
                table.pop(key)
            else:
                table[key] = value
    return data


CONFIGS = [
    (PROJECT_ROOT / "configs" / "demo.toml", "run"),
    (PROJECT_ROOT / "competitions" / "shared-all.toml", "competition"),
    (PROJECT_ROOT / "prefpred" / "models" / "backbone" / "configs" / "minilm-budget.toml",
     "backbone"),
]


@pytest.mark.parametrize("source,kind", CONFIGS, ids=[c[1] for c in CONFIGS])
def test_config_loaders_either_load_or_fail_in_one_line(tmp_path_factory, source, kind):
    from prefpred.competitions import load_competition
    from prefpred.models.backbone.config import load_backbone_config
    from prefpred.run_config import read_run_config

    loader = {"run": read_run_config, "competition": load_competition,
              "backbone": load_backbone_config}[kind]
    data = tomllib.loads(source.read_text(encoding="utf-8"))

    @settings(FUZZ, max_examples=60)
    @given(case=mutated_toml(data), cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
    def check(case, cut):
        path = tmp_path_factory.mktemp("cfg") / f"{kind}.toml"
        text = _toml(case)
        path.write_text(text[:int(len(text) * cut)] if cut is not None else text)
        try:
            loader(path)
        except PrefpredError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message, message

    check()


def test_params_files_either_build_the_model_or_fail_in_one_line(tmp_path_factory):
    from prefpred.models.base import build_model
    from prefpred.params import model_params

    base = {"params": {"num_leaves": 7, "learning_rate": 0.1, "feature_set": "all",
                       "min_child_samples": 20}}

    @FUZZ
    @given(case=mutated_toml(base), as_json=st.booleans())
    def check(case, as_json):
        folder = tmp_path_factory.mktemp("params")
        path = folder / ("p.json" if as_json else "p.toml")
        path.write_text(json.dumps(case) if as_json else _toml(case))
        try:
            build_model("lgbm", model_params("lgbm", params_file=path))
        except PrefpredError as err:
            assert "\n" not in str(err)

    check()


# ------------------------------------------------------------------------- through the CLI
def test_submit_on_mutated_training_files_writes_a_valid_file_or_nothing(tmp_path_factory, cli):
    from prefpred.competitions import load_competition
    from prefpred.data.formats import load_table
    from prefpred.submission import validate_submission

    records = _records(KAGGLE, 30)
    base = tmp_path_factory.mktemp("submit")
    pl.read_csv(KAGGLE, infer_schema=False).slice(40, 8).drop(
        ["winner_model_a", "winner_model_b", "winner_tie"]).write_csv(base / "test.csv")
    test = load_table(base / "test.csv")

    @settings(FUZZ, max_examples=15)
    @given(case=mutated(records))
    def check(case):
        folder = tmp_path_factory.mktemp("case")
        train, out = folder / "train.csv", folder / "out" / "sub.csv"
        _serialise(train, *case)
        res = cli("submit", "--competition", "lmsys-chatbot-arena", "--train", train,
                  "--test", base / "test.csv", "--out", out, "--cv-folds", "2",
                  "--run-dir", folder / "runs")
        if res.code == 0:
            validate_submission(out, load_competition("lmsys-chatbot-arena"), test=test)
            return
        assert res.code == 2, res.err
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prefpred: error: "), res.err
        assert not out.exists() and not (folder / "out").exists()

    check()


def _hh_records(n: int = 10) -> list[dict]:
    import gzip

    from conftest import DATA

    with gzip.open(DATA / "hh-rlhf-harmless" / "test.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


def _llmbar_records(n: int = 10) -> list[dict]:
    from conftest import DATA

    return json.loads((DATA / "llmbar" / "Natural" / "dataset.json").read_text("utf-8"))[:n]


@pytest.mark.parametrize("kind", ["hh-rlhf", "llmbar"])
def test_two_class_readers(tmp_path_factory, kind):
    """Two-class readers: a valid table with no TIE label and no tie allowed, or one line."""
    records, name = ((_hh_records(), "h.jsonl") if kind == "hh-rlhf"
                     else (_llmbar_records(), "dataset.json"))

    def two_class(table):
        assert not table.tie_allowed().any() and (table.labels() != 2).all()

    fuzz_reader(tmp_path_factory, records, name, kind, two_class)


def _judge_records(n: int = 12) -> list[dict]:
    from conftest import DATA

    path = DATA / "llmbar" / "Natural" / "evaluators" / "GPT-4" / "Rating" / "result.json"
    return json.loads(path.read_text("utf-8"))[:n]


def test_the_judgment_readers(tmp_path_factory):
    """LLMBar result files and plain judgment tables: read with every rate a fraction, or one
    line naming the file, and evaluate-judge writes all its files or none."""
    from prefpred.cli import main
    from prefpred.judges.io import read_judgments

    records = _judge_records()
    plain = [{"id": str(i), "label": r["label"], "verdict": r["results"][0]["Vanilla"]
              ["swap = False"]["winner"] if "Vanilla" in r["results"][0] else "1",
              "score_a": 5, "score_b": 6} for i, r in enumerate(records)]

    @FUZZ
    @given(case=st.one_of(mutated(records).map(lambda c: ("llmbar", c)),
                          mutated(plain).map(lambda c: ("plain", c))))
    def check(case):
        kind, parts = case
        root = tmp_path_factory.mktemp("judge")
        if kind == "llmbar":
            path = root / "Natural" / "evaluators" / "GPT-4" / "Rating" / "result.json"
            path.parent.mkdir(parents=True)
        else:
            path = root / "j.jsonl"
        _serialise(path, *parts)
        try:
            data, _ = read_judgments([path])
        except PrefpredError as err:
            _check_failure(err, path)
            return
        assert len(data.ids) >= 1
        out = root / "out"
        code = main(["evaluate-judge", "--judgments", str(path), "--out", str(out),
                     "--bootstrap", "20"])
        written = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert (code == 0 and written == ["by_subset.csv", "report.html", "summary.json"]) or \
            (code != 0 and written == []), (code, written)
        if code == 0:
            overall = json.loads((out / "summary.json").read_text())["overall"]
            for key in ("accuracy_original", "agreement"):
                value = overall.get(key)
                assert value is None or (isinstance(value, float) and 0 <= value <= 1) or \
                    (isinstance(value, float) and math.isnan(value))

    check()
