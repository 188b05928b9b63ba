"""The documented commands, end to end on the real data."""

import json

import polars as pl
from conftest import KAGGLE, MT_BENCH


def test_data_inspect_reports_quirks(cli):
    res = cli("data", "inspect", KAGGLE)
    assert res.code == 0, res.err
    assert "rows: 1000" in res.out
    assert "A 344" in res.out and "TIE 308" in res.out
    assert "null turns in response_a" in res.out
    assert "p50" in res.out
    js = cli("data", "inspect", MT_BENCH, "--json")
    info = json.loads(js.out)
    assert info["rows"] == 1689 and info["prompt_groups"] == 80


def test_cv_prints_per_source_table(cli, tmp_path):
    res = cli("cv", "--competition", "shared-all", "--model", "prior", "--run-dir", tmp_path)
    assert res.code == 0, res.err
    for source in ("lmsys-kaggle", "mt-bench-human", "autoj-pairwise", "pandalm", "llmeval2", "ALL"):
        assert source in res.out
    oof = pl.read_parquet(tmp_path / "shared-all" / "prior" / "oof.parquet")
    assert oof.height == 7633
    assert oof["fold"].n_unique() == 5


def test_cv_with_data_override_and_params(cli, tmp_path):
    res = cli("cv", "--competition", "lmsys-chatbot-arena", "--data", KAGGLE, "--model", "prior",
              "--param", "smoothing=0", "--param", "symmetric=false", "--folds", "3",
              "--run-dir", tmp_path)
    assert res.code == 0, res.err
    scores = json.loads((tmp_path / "lmsys-chatbot-arena" / "prior" / "scores.json").read_text())
    assert scores["params"] == {"smoothing": 0, "symmetric": False}
    assert scores["n_folds"] == 3


def test_holdout_submit_score_round_trip(cli, tmp_path):
    res = cli("holdout", "--competition", "shared-all", "--source", "lmsys-kaggle",
              "--out", tmp_path / "demo")
    assert res.code == 0, res.err
    train = tmp_path / "demo" / "train.parquet"
    test = tmp_path / "demo" / "test.csv"
    labelled = tmp_path / "demo" / "test_labelled.csv"
    test_ids = set(pl.read_csv(test, infer_schema=False)["id"].to_list())
    train_df = pl.read_parquet(train)
    assert not test_ids & set(train_df["id"].to_list())
    assert not set(pl.read_csv(labelled, infer_schema=False)["id"].to_list()) ^ test_ids
    sub = tmp_path / "sub.csv"
    res = cli("submit", "--competition", "lmsys-chatbot-arena", "--train", train, "--test", test,
              "--out", sub, "--run-dir", tmp_path / "runs", "--cv-folds", "2")
    assert res.code == 0, res.err
    res = cli("score", sub, "--competition", "lmsys-chatbot-arena", "--labels", labelled)
    assert res.code == 0, res.err
    assert "log_loss" in res.out


def test_unknown_model_and_competition(cli):
    res = cli("cv", "--competition", "shared-all", "--model", "nope")
    assert res.code == 2 and "unknown model 'nope'" in res.err
    res = cli("cv", "--competition", "nope")
    assert res.code == 2 and "unknown competition" in res.err


def test_list(cli):
    res = cli("list")
    assert "kaggle-lmsys" in res.out and "prior" in res.out and "shared-all" in res.out
