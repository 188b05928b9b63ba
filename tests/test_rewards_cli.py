"""The reward pipeline end to end: score pairs with a (tiny, random) Hugging Face reward model,
fit the tie-aware calibrators on the scores, apply them, check the written probabilities."""

import numpy as np
import polars as pl
import pytest
from conftest import AUTOJ

from prefpred.data.formats import load_table
from prefpred.rewards.scoring import conversation, score_pairs


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from prefpred.testing import tiny_backbone

    return tiny_backbone("llama", tmp_path_factory.mktemp("rm") / "tiny-rm", num_labels=1)


@pytest.fixture(scope="module")
def pairs():
    return load_table(AUTOJ).take(list(range(120)))


def test_conversation_interleaves_turns():
    assert conversation(["q1", "q2"], ["r1", "r2"]) == [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "r2"}]
    assert conversation(["q"], []) == [{"role": "user", "content": "q"}]


def test_rewards_follow_the_response_not_its_position_or_batch(reward_model, pairs):
    few = pairs.take(list(range(12)))
    direct = score_pairs(reward_model, few, batch_size=5, max_length=1024, progress=False)
    swapped = score_pairs(reward_model, few.swap(), batch_size=1, max_length=1024,
                          progress=False)
    assert np.allclose(direct["reward_a"], swapped["reward_b"], atol=1e-5)
    assert np.allclose(direct["reward_b"], swapped["reward_a"], atol=1e-5)
    assert direct["label"].to_list() == [("A", "B", "TIE")[i] for i in few.labels()]
    assert direct["reward_a"].n_unique() > 1


def test_score_then_calibrate_then_apply_from_the_command_line(cli, reward_model, tmp_path):
    scores = tmp_path / "scores.parquet"
    res = cli("score-rewards", "--model", reward_model, "--data", AUTOJ, "--out", scores,
              "--limit", "120", "--max-length", "256", "--batch-size", "16")
    assert res.code == 0, res.err
    frame = pl.read_parquet(scores)
    assert frame.columns == ["id", "reward_a", "reward_b", "source", "group", "label"]
    assert frame.height == 120

    model_dir = tmp_path / "calibrator"
    res = cli("calibrate-rewards", "fit", "--scores", scores, "--out", model_dir, "--folds", "3")
    assert res.code == 0, res.err
    for name in ("uncalibrated", "prior", "rao-kupper", "davidson", "multinomial", "chosen:"):
        assert name in res.out

    for use, out in ((None, tmp_path / "proba.csv"), ("davidson", tmp_path / "proba.parquet")):
        args = ["calibrate-rewards", "apply", "--model", model_dir, "--scores", scores,
                "--out", out] + (["--use", use] if use else [])
        res = cli(*args)
        assert res.code == 0, res.err
        proba = pl.read_csv(out) if out.suffix == ".csv" else pl.read_parquet(out)
        assert proba.columns == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
        assert proba["id"].cast(pl.String).to_list() == frame["id"].to_list()
        values = proba.select(pl.exclude("id")).to_numpy()
        assert np.allclose(values.sum(1), 1) and (values > 0).all()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # the scores of a test file have no labels: apply needs none
    unlabelled = tmp_path / "test_scores.csv"
    frame.drop("label").head(10).write_csv(unlabelled)
    res = cli("calibrate-rewards", "apply", "--model", model_dir / "rao-kupper.json",
              "--scores", unlabelled, "--out", tmp_path / "test_proba.csv")
    assert res.code == 0, res.err
    assert pl.read_csv(tmp_path / "test_proba.csv").height == 10


def test_reward_command_errors_are_one_line(cli, tmp_path):
    from prefpred.testing import tiny_backbone

    three = tiny_backbone("llama", tmp_path / "three", num_labels=3)
    res = cli("score-rewards", "--model", three, "--data", AUTOJ, "--out", tmp_path / "s.csv",
              "--limit", "4")
    assert res.code == 2 and "one output" in res.err and res.err.strip().count("\n") == 0
    res = cli("score-rewards", "--model", tmp_path / "missing", "--data", AUTOJ,
              "--out", tmp_path / "s.csv")
    assert res.code == 2 and "folder does not exist" in res.err
    res = cli("calibrate-rewards", "apply", "--model", tmp_path, "--scores", AUTOJ,
              "--out", tmp_path / "p.csv")
    assert res.code == 2 and "no calibrator.json in the model folder" in res.err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "p.csv").exists()
