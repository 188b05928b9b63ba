"""Malformed inputs: each gives one error line naming file, row and column, exit status 2, and
leaves no output file behind."""

import json

import numpy as np
import polars as pl
import pytest
from conftest import AUTOJ, KAGGLE, LLMEVAL2

from prefpred.competitions import load_competition
from prefpred.data.formats import load_table
from prefpred.submission import submission_frame

COMP = "lmsys-chatbot-arena"


@pytest.fixture(scope="module")
def kaggle_raw():
    return pl.read_csv(KAGGLE, infer_schema=False).head(40)


@pytest.fixture
def good_test(tmp_path, kaggle_raw):
    path = tmp_path / "test.csv"
    kaggle_raw.tail(10).select("id", "prompt", "response_a", "response_b").write_csv(path)
    return path


def _set(df: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    """Set one cell (0-based row) to ``value`` (a string, or None)."""
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, dtype=pl.String))
        .otherwise(pl.col(column)).alias(column))


def _assert_one_line_error(res, *, file: str, row: int | None, column: str | None, text: str):
    assert res.code == 2, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    line = lines[0]
    assert line.startswith("prefpred: error: ")
    assert file in line
    if row is not None:
        assert f"row {row}" in line, line
    if column is not None:
        assert f"column '{column}'" in line, line
    assert text in line, line
    assert "Traceback" not in res.err


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not (tmp_path / (out.name + ".provenance.json")).exists()
    assert not list(tmp_path.glob(".*.tmp"))


# (name, how to corrupt the Kaggle train rows, expected row, column, message fragment)
TRAIN_CASES = [
    ("missing column", lambda d: d.drop("response_b"), None, "response_b", "missing column"),
    ("invalid JSON in a turn list", lambda d: _set(d, 4, "prompt", '["unterminated'), 5, "prompt",
     "malformed JSON"),
    ("turn list is not a list", lambda d: _set(d, 6, "response_a", '"just text"'), 7, "response_a",
     "expected a JSON list"),
    ("NaN winner", lambda d: _set(d, 2, "winner_model_b", "NaN"), 3, "winner_model_b",
     "is not 0 or 1"),
    ("two winners", lambda d: _set(_set(d, 8, "winner_model_a", "1"), 8, "winner_model_b", "1"), 9,
     "winner_model_a", "more than one winner"),
    ("no winner", lambda d: _set(_set(_set(d, 3, "winner_model_a", "0"), 3, "winner_model_b", "0"),
                                 3, "winner_tie", "0"), 4, "winner_model_a", "no winner set"),
    ("empty prompt cell", lambda d: _set(d, 11, "prompt", None), 12, "prompt", "empty value"),
    ("duplicate id", lambda d: _set(d, 9, "id", d["id"][1]), 10, "id", "duplicate id"),
    ("JSON null turn list", lambda d: _set(d, 1, "response_b", "null"), 2, "response_b",
     "JSON null"),
    ("empty turn list", lambda d: _set(d, 5, "response_a", "[]"), 6, "response_a", "empty turn list"),
    ("winner not a number", lambda d: _set(d, 0, "winner_tie", "yes"), 1, "winner_tie",
     "is not 0 or 1"),
]


@pytest.mark.parametrize("name,corrupt,row,column,text", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_training_file(cli, tmp_path, kaggle_raw, good_test, name, corrupt, row, column, text):
    bad = tmp_path / "train.csv"
    corrupt(kaggle_raw.head(30)).write_csv(bad)
    out = tmp_path / "sub.csv"
    res = cli("submit", "--competition", COMP, "--train", bad, "--test", good_test,
              "--model", "prior", "--out", out, "--cv-folds", "0")
    _assert_one_line_error(res, file="train.csv", row=row, column=column, text=text)
    _assert_nothing_written(tmp_path, out)


def test_empty_file(cli, tmp_path, good_test):
    bad = tmp_path / "train.csv"
    bad.write_bytes(b"")
    out = tmp_path / "sub.csv"
    res = cli("submit", "--competition", COMP, "--train", bad, "--test", good_test, "--out", out,
              "--cv-folds", "0")
    _assert_one_line_error(res, file="train.csv", row=None, column=None, text="file is empty")
    _assert_nothing_written(tmp_path, out)


def test_header_only_file(cli, tmp_path, kaggle_raw):
    bad = tmp_path / "data.csv"
    kaggle_raw.head(0).write_csv(bad)
    res = cli("data", "inspect", bad)
    _assert_one_line_error(res, file="data.csv", row=None, column=None, text="no data rows")


def test_non_utf8_bytes(cli, tmp_path, kaggle_raw):
    bad = tmp_path / "latin1.csv"
    kaggle_raw.head(10).write_csv(bad)
    raw = bad.read_bytes()
    # break the UTF-8 of the 4th data row's response_b with a Latin-1 byte
    target = json.dumps([kaggle_raw["response_b"][3][2:12]])[2:8].encode()
    assert raw.count(target) >= 1
    raw = raw.replace(target, target[:3] + b"\xe9" + target[3:], 1)
    bad.write_bytes(raw)
    res = cli("data", "inspect", bad)
    _assert_one_line_error(res, file="latin1.csv", row=None, column=None, text="not valid UTF-8")
    assert "row " in res.err and "column '" in res.err


def test_lone_surrogate_rejected_in_strict_mode(cli, tmp_path, kaggle_raw):
    bad = tmp_path / "s.csv"
    _set(kaggle_raw.head(10), 6, "response_a", '["half an emoji \\udc8d"]').write_csv(bad)
    res = cli("data", "inspect", bad, "--strict")
    _assert_one_line_error(res, file="s.csv", row=7, column="response_a", text="surrogate")
    ok = cli("data", "inspect", bad)  # default: repaired and reported
    assert ok.code == 0 and "lone surrogate escapes replaced" in ok.out


def test_malformed_jsonl_line(cli, tmp_path):
    lines = AUTOJ.read_text().splitlines()[:20]
    lines[13] = lines[13][:-5]
    bad = tmp_path / "autoj.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    res = cli("data", "inspect", bad, "--format", "autoj")
    _assert_one_line_error(res, file="autoj.jsonl", row=14, column=None, text="malformed JSON")


@pytest.mark.parametrize("path,fmt,key,value,column", [
    (AUTOJ, "autoj", "label", 3, "label"),
    (LLMEVAL2, "llmeval2", "human", "model3", "human"),
])
def test_wrong_label_encoding(cli, tmp_path, path, fmt, key, value, column):
    recs = [json.loads(x) for x in path.read_text().splitlines()[:20]]
    recs[16][key] = value
    bad = tmp_path / f"{fmt}.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    res = cli("data", "inspect", bad, "--format", fmt)
    _assert_one_line_error(res, file=bad.name, row=17, column=column, text="not a known label")


def test_nan_text_in_a_jsonl_source(cli, tmp_path):
    recs = AUTOJ.read_text().splitlines()[:10]
    recs[4] = recs[4].replace('"response 2": "', '"response 2": NaN, "x": "', 1)
    bad = tmp_path / "autoj.jsonl"
    bad.write_text("\n".join(recs) + "\n")
    res = cli("data", "inspect", bad, "--format", "autoj")
    _assert_one_line_error(res, file="autoj.jsonl", row=5, column="response 2", text="empty value")


def test_duplicate_test_ids_stop_submit(cli, tmp_path, kaggle_raw):
    test = tmp_path / "test.csv"
    t = kaggle_raw.tail(10).select("id", "prompt", "response_a", "response_b")
    _set(t, 7, "id", t["id"][2]).write_csv(test)
    out = tmp_path / "sub.csv"
    res = cli("submit", "--competition", COMP, "--train", KAGGLE, "--test", test, "--out", out,
              "--cv-folds", "0")
    _assert_one_line_error(res, file="test.csv", row=8, column="id", text="duplicate id")
    _assert_nothing_written(tmp_path, out)


# ------------------------------------------------------------------------- submissions
@pytest.fixture
def good_submission(tmp_path, good_test):
    comp = load_competition(COMP)
    test = load_table(good_test)
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=len(test))
    path = tmp_path / "sub.csv"
    submission_frame(test.ids, p, comp).write_csv(path)
    return path


def _edit(path, fn):
    df = pl.read_csv(path, infer_schema=False)
    fn(df).write_csv(path)


SUBMISSION_CASES = [
    ("missing id", lambda d: d.head(9), 10, "id", "missing"),
    ("extra id", lambda d: pl.concat([d, d.head(1).with_columns(pl.lit("999").alias("id"))]), 11,
     "id", "not in the test file"),
    ("duplicate id", lambda d: _set(d, 4, "id", d["id"][3]), 5, "id", "duplicate id"),
    ("negative probability", lambda d: _set(_set(d, 2, "winner_model_a", "-0.1"), 2,
                                            "winner_tie", "0.5"), 3, "winner_model_a",
     "outside [0, 1]"),
    ("rows not summing to one", lambda d: _set(d, 6, "winner_tie", "0.9"), 7,
     "winner_model_a+winner_model_b+winner_tie", "sum to"),
    ("NaN probability", lambda d: _set(d, 1, "winner_model_b", "NaN"), 2, "winner_model_b",
     "NaN"),
    ("text probability", lambda d: _set(d, 8, "winner_tie", "high"), 9, "winner_tie",
     "not a number"),
    ("missing column", lambda d: d.drop("winner_tie"), None, "winner_tie", "missing column"),
    ("extra column", lambda d: d.with_columns(pl.lit("x").alias("note")), None, "note",
     "unexpected column"),
]


@pytest.mark.parametrize("name,corrupt,row,column,text", SUBMISSION_CASES,
                         ids=[c[0] for c in SUBMISSION_CASES])
def test_bad_submission(cli, good_submission, good_test, name, corrupt, row, column, text):
    assert cli("validate-submission", good_submission, "--competition", COMP,
               "--test", good_test).code == 0
    _edit(good_submission, corrupt)
    res = cli("validate-submission", good_submission, "--competition", COMP, "--test", good_test)
    _assert_one_line_error(res, file="sub.csv", row=row, column=column, text=text)


def test_reordered_rows_and_columns_are_valid(cli, good_submission, good_test):
    """Graders match rows by id and columns by name (Kaggle; mle-bench sorts by id)."""
    _edit(good_submission, lambda d: pl.concat([d[1:2], d[0:1], d[2:]]).select(
        "id", "winner_model_b", "winner_model_a", "winner_tie"))
    res = cli("validate-submission", good_submission, "--competition", COMP, "--test", good_test)
    assert res.code == 0, res.err


def test_empty_submission(cli, good_submission, good_test):
    good_submission.write_text("")
    res = cli("validate-submission", good_submission, "--competition", COMP, "--test", good_test)
    _assert_one_line_error(res, file="sub.csv", row=None, column=None, text="file is empty")
