"""The LightGBM feature model: symmetry, determinism, weights, inner early stopping, artefacts,
and the CLI's per-source table. Small real subsets and few trees keep it fast."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from prefpred.data.folds import assign_folds, fold_split
from prefpred.errors import ConfigError
from prefpred.labels import swap_class_columns
from prefpred.metrics import log_loss
from prefpred.models.base import build_model
from prefpred.models.lgbm import LightGBMModel, inner_split
from prefpred.probabilities import softmax
from prefpred.stages import run_cv

FAST = {"n_estimators": 60, "learning_rate": 0.15, "early_stopping_rounds": 15,
        "num_leaves": 7, "feature_cache": None}
FAST_VALID = LightGBMModel().valid_fraction


@pytest.fixture(scope="module")
def subset(shared_all):
    rng = np.random.default_rng(0)
    return shared_all.take(np.sort(rng.choice(len(shared_all), 1500, replace=False)))


@pytest.fixture(scope="module")
def split(subset):
    folds = assign_folds(subset, 4, 0)
    train_idx, test_idx = fold_split(folds, 0)
    return subset.take(train_idx), subset.take(test_idx)


@pytest.fixture(scope="module")
def fitted(split):
    return LightGBMModel(**FAST).fit(split[0])


def test_registry_builds_it_with_params():
    m = build_model("lgbm", {"num_leaves": 5})
    assert isinstance(m, LightGBMModel) and m.get_params()["num_leaves"] == 5
    json.dumps(m.get_params())
    with pytest.raises(ConfigError, match="feature_set"):
        LightGBMModel(feature_set="nope")


def test_predictions_are_exactly_swap_symmetric_and_beat_the_prior(fitted, split):
    _, test = split
    logits = fitted.predict_logits(test)
    assert logits.shape == (len(test), 3) and np.isfinite(logits).all()
    p, ps = softmax(logits), softmax(fitted.predict_logits(test.swap()))
    np.testing.assert_array_equal(p, swap_class_columns(ps))
    y = test.labels()
    prior = np.bincount(split[0].labels(), minlength=3) / len(split[0])
    assert log_loss(y, p) < log_loss(y, np.tile(prior, (len(y), 1))) - 0.03


def test_swap_augmentation_makes_even_raw_scores_nearly_symmetric(split):
    train, test = split
    params = {**FAST, "swap_average": False}
    aug = LightGBMModel(**params).fit(train)
    raw = softmax(aug.predict_logits(test))
    raw_swapped = softmax(aug.predict_logits(test.swap()))
    plain = LightGBMModel(**params, swap_augment=False).fit(train)
    gap_aug = np.abs(raw - swap_class_columns(raw_swapped)).mean()
    gap_plain = np.abs(softmax(plain.predict_logits(test))
                       - swap_class_columns(softmax(plain.predict_logits(test.swap())))).mean()
    assert gap_aug < gap_plain


def test_same_seed_same_logits_other_seed_other_logits(split, fitted):
    train, test = split
    again = LightGBMModel(**FAST).fit(train)
    np.testing.assert_array_equal(again.predict_logits(test), fitted.predict_logits(test))
    other = LightGBMModel(**FAST, seed=1).fit(train)
    assert not np.array_equal(other.predict_logits(test), fitted.predict_logits(test))


def test_sample_weights_are_used(split, fitted):
    train, test = split
    w = np.where(train.labels() == 2, 4.0, 1.0)  # ties count four times
    heavy = LightGBMModel(**FAST).fit(train.with_columns(weight=w))
    p_tie = softmax(heavy.predict_logits(test))[:, 2].mean()
    assert p_tie > softmax(fitted.predict_logits(test))[:, 2].mean() + 0.05


def test_inner_split_is_grouped_stratified_and_deterministic(split):
    train, _ = split
    a_tr, a_va = inner_split(train, 0.2, 3)
    b_tr, b_va = inner_split(train, 0.2, 3)
    assert np.array_equal(a_va, b_va) and np.array_equal(a_tr, b_tr)
    groups = train.groups()
    assert not set(groups[a_tr]) & set(groups[a_va])
    assert len(a_tr) + len(a_va) == len(train)
    assert 0.12 < len(a_va) / len(train) < 0.28
    assert not np.array_equal(inner_split(train, 0.2, 4)[1], a_va)


def test_early_stopping_watches_the_inner_split(split):
    train, _ = split
    m = LightGBMModel(**{**FAST, "n_estimators": 400, "learning_rate": 0.3}).fit(train)
    assert m.best_iteration_ < 400 and m.inner_valid_logloss_ is not None
    # refit: all training rows, for the inner best number of rounds scaled to the larger set
    inner = LightGBMModel(**FAST).fit(train)
    refit = LightGBMModel(**{**FAST, "refit": True}).fit(train)
    assert refit.best_iteration_ == round(inner.best_iteration_ / (1 - FAST_VALID))
    assert refit.booster_.current_iteration() == refit.best_iteration_


def test_importances_and_model_saved_in_the_work_dir(split, tmp_path):
    m = LightGBMModel(**FAST)
    m.set_work_dir(tmp_path)
    m.fit(split[0])
    import lightgbm as lgb

    imp = pl.read_csv(tmp_path / "importance.csv")
    assert imp.columns == ["feature", "gain", "split"]
    assert "source" in imp["feature"].to_list() and imp["gain"].sum() > 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["best_iteration"] == m.best_iteration_ and fit["params"]["num_leaves"] == 7
    # the saved model is the fitted one: read back by LightGBM, it gives the same raw scores
    # and the same gains as importance.csv
    saved = lgb.Booster(model_file=str(tmp_path / "model.txt"))
    x = m._matrix(split[1])
    np.testing.assert_allclose(saved.predict(x, raw_score=True),
                               m.booster_.predict(x, raw_score=True,
                                                  num_iteration=m.best_iteration_), rtol=1e-12)
    gains = dict(zip(saved.feature_name(), saved.feature_importance("gain"), strict=True))
    top = imp.row(0, named=True)
    assert gains[top["feature"]] == pytest.approx(top["gain"]) == pytest.approx(max(gains.values()))


def test_cv_runner_saves_importances_per_fold(subset, tmp_path):
    run_cv(subset, lambda: LightGBMModel(**FAST), name="lgbm", n_folds=3, seed=0,
           run_dir=tmp_path, progress=False)
    fits = [json.loads((tmp_path / "lgbm" / f"fold_{k}_work" / "fit.json").read_text())
            for k in range(3)]
    assert all((tmp_path / "lgbm" / f"fold_{k}_work" / "importance.csv").exists()
               for k in range(3))
    # one model per fold, each fitted on its own rows (their inner losses differ)
    assert len({f["inner_valid_logloss"] for f in fits}) == 3


def test_unknown_source_at_prediction_is_handled(fitted, split):
    _, test = split
    foreign = test.take(np.arange(10)).with_columns(source=pl.lit("never-seen"))
    assert np.isfinite(fitted.predict_logits(foreign)).all()


def test_cli_cv_prints_the_per_source_table(cli, tmp_path):
    res = cli("cv", "--competition", "shared-all", "--model", "lgbm", "--run-dir", tmp_path,
              "--param", "n_estimators=40", "--param", "learning_rate=0.2",
              "--param", "early_stopping_rounds=10", "--param", "num_leaves=7")
    assert res.code == 0, res.err
    for source in ("lmsys-kaggle", "mt-bench-human", "autoj-pairwise", "pandalm", "llmeval2",
                   "ALL"):
        assert source in res.out
    scores = json.loads((tmp_path / "shared-all" / "lgbm" / "scores.json").read_text())
    overall = scores["scores"][-1]
    assert overall["group"] == "ALL" and overall["rows"] == 7633
    assert overall["log_loss"] < 1.0  # the class prior scores 1.068 here
