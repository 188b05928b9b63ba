"""`prefpred calibrate` and `prefpred stack` on out-of-fold logits written by `prefpred cv`."""

import json

import numpy as np
import polars as pl
import pytest

from prefpred.calibration import load_calibrator
from prefpred.probabilities import softmax
from prefpred.stack import load_stacker


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from prefpred.cli import main

    run_dir = tmp_path_factory.mktemp("runs")
    for model in ("prior", "uniform"):
        assert main(["cv", "--competition", "shared-all", "--model", model,
                     "--run-dir", str(run_dir)]) == 0
    return run_dir / "shared-all"


def test_calibrate_command(cli, runs, tmp_path):
    out = tmp_path / "cal"
    res = cli("calibrate", "--oof", runs / "uniform", "--method", "vector", "--method",
              "temperature_by_length", "--competition", "shared-all", "--out", out)
    assert res.code == 0, res.err
    assert "temperature_by_length" in res.out and "pandalm" in res.out
    assert sorted(p.name for p in out.iterdir()) == ["calibrator.json", "reliability.png",
                                                     "scores.csv"]
    scores = pl.read_csv(out / "scores.csv").filter(pl.col("group") == "ALL")
    ll = dict(zip(scores["calibration"], scores["log_loss"], strict=True))
    # vector scaling's biases turn the uniform forecast into the class prior
    assert ll["none"] == pytest.approx(np.log(3)) and ll["vector"] < ll["none"] - 0.02
    cal = load_calibrator(out / "calibrator.json")
    proba = softmax(cal.predict_logits(np.zeros((1, 3))))[0]
    assert proba[2] < proba[0] - 0.05  # fewer ties than wins
    res = cli("calibrate", "--oof", runs / "uniform", "--method", "temperature_by_length")
    assert res.code == 2 and "needs --competition" in res.err


def test_stack_command(cli, runs, tmp_path):
    out = tmp_path / "stack"
    res = cli("stack", "--oof", f"prior={runs / 'prior'}",
              "--oof", f"uniform={runs / 'uniform' / 'oof.parquet'}", "--stacker", "logistic",
              "--stacker", "blend", "--features", "--competition", "shared-all", "--out", out)
    assert res.code == 0, res.err
    for name in ("prior", "uniform", "stack:logistic", "blend"):
        assert name in res.out
    stacker = load_stacker(out / "stacker.json")
    assert stacker.name == "logistic" and stacker.models_ == ["prior", "uniform"]
    assert "log_len_diff" in stacker.feature_names_
    # applied at test time to new rows: base logits by name, features as a frame
    from prefpred.competitions import load_competition
    from prefpred.features.lengths import length_features

    test = load_competition("shared-all").load_train().take(list(range(5)))
    base = {"prior": np.tile(np.log([0.4, 0.4, 0.2]), (5, 1)), "uniform": np.zeros((5, 3))}
    z = stacker.predict_logits(base, length_features(test))
    feats = length_features(test)
    assert z.shape == (5, 3) and np.isfinite(z).all()
    # the frame's columns are taken in the fitted order, whatever order the frame has
    shuffled = feats.select(list(reversed(feats.columns)))
    assert np.array_equal(z, stacker.predict_logits(base, shuffled))
    assert np.array_equal(z, stacker.predict_logits(
        base, feats.select(stacker.feature_names_).to_numpy()))
    assert json.loads((out / "calibrator.json").read_text())["name"] == "temperature"
    scores = pl.read_csv(out / "scores.csv").filter(pl.col("group") == "ALL")
    by = {(m, c): v for m, c, v in scores.select("model", "calibration", "log_loss").iter_rows()}
    assert by[("stack:logistic", "temperature")] < by[("prior", "none")] - 0.01
    res = cli("stack", "--oof", f"prior={runs / 'prior'}", "--oof", "x=nowhere.parquet")
    assert res.code == 2 and "nowhere.parquet: out-of-fold file not found" in res.err
