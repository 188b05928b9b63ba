"""Stacking and blending over out-of-fold logits: joins, nested CV honesty, real-data gains."""

import numpy as np
import polars as pl
import pytest

from prefpred.errors import ConfigError, DataError
from prefpred.features.lengths import length_features
from prefpred.metrics import log_loss
from prefpred.models.prior import ClassPrior
from prefpred.oof import join_oof
from prefpred.probabilities import sample_labels as draw
from prefpred.probabilities import softmax
from prefpred.stack import (
    STACKERS,
    LogisticStacker,
    WeightBlend,
    evaluate,
    fit_stacker,
    load_stacker,
    stack_out_of_fold,
)
from prefpred.stages import run_cv


def oof(ids, folds, y, logits, sources=None):
    return pl.DataFrame({"id": ids, "source": sources if sources is not None else ["s"] * len(ids),
                         "fold": folds, "label": y, "logit_A": logits[:, 0],
                         "logit_B": logits[:, 1], "logit_TIE": logits[:, 2]})


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.normal(size=(n, 3))
    y = draw(softmax(truth), 1)
    folds = np.arange(n) % 5
    ids = [f"r{i}" for i in range(n)]
    frames = {
        "good": oof(ids, folds, y, truth + rng.normal(size=(n, 3)) * 0.5),
        "noisy": oof(ids, folds, y, 3 * truth + rng.normal(size=(n, 3)) * 2.0),
        "junk": oof(ids, folds, y, rng.normal(size=(n, 3))),
    }
    return frames, y


def test_join_oof_joins_by_id_in_any_order(synthetic):
    frames, y = synthetic
    shuffled = {**frames, "noisy": frames["noisy"].sample(fraction=1.0, shuffle=True, seed=3)}
    data = join_oof(shuffled)
    assert data.models == ["good", "noisy", "junk"]
    assert np.array_equal(data.y, y)
    assert np.allclose(data.logits["noisy"],
                       frames["noisy"].select("logit_A", "logit_B", "logit_TIE").to_numpy())


def test_join_oof_rejects_mismatched_inputs(synthetic, tmp_path):
    frames, _ = synthetic
    good = frames["good"]
    path = tmp_path / "other.parquet"
    good.with_columns(pl.when(pl.col("id") == "r7").then(4).otherwise(pl.col("fold"))
                      .alias("fold")).write_parquet(path)
    with pytest.raises(DataError, match="'r7': fold ids .* differ") as err:
        join_oof({"good": good, "other": path})
    assert str(err.value).startswith(f"{path}: column 'fold'")
    with pytest.raises(DataError, match="id 'r0' of 'good' has no out-of-fold logits in 'cut'"):
        join_oof({"good": good, "cut": good.tail(100)})
    with pytest.raises(DataError, match="labels differ"):
        join_oof({"good": good, "relabel": good.with_columns(
            pl.when(pl.col("id") == "r3").then((pl.col("label") + 1) % 3)
            .otherwise(pl.col("label")).alias("label"))})
    with pytest.raises(DataError, match="row 4, column 'label': label 9 is not 0, 1 or 2"):
        join_oof({"good": good, "bad": good.with_columns(
            pl.when(pl.col("id") == "r3").then(9).otherwise(pl.col("label")).alias("label"))})
    with pytest.raises(DataError, match="out-of-fold file not found"):
        join_oof({"gone": tmp_path / "nothing"})
    with pytest.raises(DataError, match="column 'fish'"):
        join_oof({"good": good}, features=good.select("id"), feature_columns=["fish"])


def test_blend_puts_its_weight_on_the_informative_model(synthetic):
    frames, y = synthetic
    data = join_oof(frames)
    blend = WeightBlend().fit_data(data)
    weights = blend.normalised_weights_
    assert weights["junk"] < 0.05
    assert weights["good"] > weights["noisy"]
    pred = blend.predict_data(data)
    single = min(log_loss(y, softmax(v)) for v in data.logits.values())
    assert log_loss(y, softmax(pred)) < single


@pytest.mark.parametrize("name", sorted(STACKERS))
def test_stacking_is_out_of_fold(synthetic, name):
    """Nested CV: a fold's stacked logits do not move when that fold's labels change."""
    frames, y = synthetic
    data = join_oof(frames)
    params = {"n_estimators": 60} if name == "lgbm" else {}
    before = stack_out_of_fold(name, data, **params)
    scrambled = join_oof({k: v.with_columns(
        pl.when(pl.col("fold") == 2).then((pl.col("label") + 1) % 3).otherwise(pl.col("label"))
        .alias("label")) for k, v in frames.items()})
    after = stack_out_of_fold(name, scrambled, **params)
    fold2 = data.folds == 2
    assert np.allclose(before[fold2], after[fold2])
    assert not np.allclose(before[~fold2], after[~fold2])
    assert log_loss(y, softmax(before)) < log_loss(y, softmax(data.logits["good"]))


def test_logistic_stacker_chooses_c_on_inner_folds(synthetic):
    frames, _ = synthetic
    data = join_oof(frames)
    fitted = LogisticStacker(Cs=(1e-6, 1.0)).fit_data(data)
    assert fitted.C_ == 1.0  # a vanishing C leaves only the intercepts: inner CV rejects it
    assert LogisticStacker(Cs=(1e-6,)).fit_data(data).C_ == 1e-6


def test_logistic_fit_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 5))
    x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=2000)  # nearly collinear, like base models
    y = draw(softmax(x[:, :3] * [1.0, -0.5, 0.3] + 0.2), 3)
    theta = LogisticStacker._fit_lr(x, y, np.ones(2000), C=0.5)
    sk = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)
    assert np.allclose(theta[:15].reshape(3, 5), sk.coef_, atol=1e-5)
    assert np.allclose(theta[15:] - theta[15:].mean(), sk.intercept_ - sk.intercept_.mean(),
                       atol=1e-4)


@pytest.mark.parametrize("name", sorted(STACKERS))
def test_stackers_save_and_load(synthetic, name, tmp_path):
    frames, _ = synthetic
    data = join_oof(frames)
    model = fit_stacker(name, data, **({"n_estimators": 30} if name == "lgbm" else {}))
    back = load_stacker(model.save(tmp_path / "stack.json"))
    assert np.allclose(back.predict_data(data), model.predict_data(data))
    with pytest.raises(ConfigError, match="missing"):
        back.predict_logits({"good": data.logits["good"]})
    if back.uses_features:  # fitted without features: extra columns are refused in one line
        with pytest.raises(ConfigError, match="fitted on 9 columns, got 11"):
            back.predict_logits(data.logits, np.zeros((len(data.y), 2)))


class LengthLogit:
    """A quick real base model: logistic regression on the two responses' lengths."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def _x(self, table):
        return length_features(table).select("log_len_a", "log_len_b", "log_len_diff").to_numpy()

    def fit(self, table):
        from sklearn.linear_model import LogisticRegression

        self.lr_ = LogisticRegression(C=self.C, max_iter=500).fit(self._x(table), table.labels())
        return self

    def predict_logits(self, table):
        return self.lr_.decision_function(self._x(table))

    def get_params(self):
        return {"C": self.C}


class SourcePrior:
    """Another: the class frequencies of the row's data set (tie rates differ by source)."""

    def fit(self, table):
        y, src = table.labels(), table.column("source").to_numpy()
        self.log_prior_ = {s: np.log(np.bincount(y[src == s], minlength=3) + 1.0)
                           for s in np.unique(src)}
        return self

    def predict_logits(self, table):
        return np.stack([self.log_prior_[s] for s in table.column("source").to_numpy()])

    def get_params(self):
        return {}


def test_stack_on_real_out_of_fold_logits(shared_all, tmp_path):
    for name, model in (("prior", ClassPrior), ("source", SourcePrior), ("length", LengthLogit)):
        run_cv(shared_all, model, name=name, run_dir=tmp_path, progress=False)
    data = join_oof({m: tmp_path / m for m in ("prior", "source", "length")},
                           features=length_features(shared_all).select("id", "log_len_prompt"))
    assert data.feature_names == ["log_len_prompt"] and len(data) == len(shared_all)
    report = evaluate(data, stackers=["blend", "logistic", "lgbm"],
                      stacker_params={"lgbm": {"n_estimators": 100}}, progress=False)
    overall = {(r["model"], r["calibration"]): r
               for r in report.scores.filter(pl.col("group") == "ALL").to_dicts()}
    models = ("prior", "source", "length", "blend", "stack:logistic", "stack:lgbm")
    assert set(overall) == {(m, c) for m in models for c in ("none", "temperature")}
    best_base = min(overall[(m, "none")]["log_loss"] for m in ("prior", "source", "length"))
    # length and data set carry different information: every combination beats each alone
    assert overall[("blend", "none")]["log_loss"] < best_base - 0.002
    for model in ("stack:logistic", "stack:lgbm"):
        assert overall[(model, "none")]["log_loss"] < best_base - 0.005
    # stackers fitted on the log loss come out calibrated; the trees also fix the length
    # model's non-linear miscalibration, which no temperature can
    assert overall[("stack:logistic", "temperature")]["ece"] < 0.025
    assert overall[("stack:lgbm", "temperature")]["ece"] < 0.02
    assert overall[("stack:lgbm", "none")]["log_loss"] < overall[("stack:logistic", "none")][
        "log_loss"]
    per_source = report.scores.filter((pl.col("model") == "stack:logistic")
                                      & (pl.col("calibration") == "none"))
    assert set(per_source["group"]) == {*shared_all.sources(), "ALL"}


def test_constructor_params_rebuild_the_stacker_and_the_feature_models():
    import json

    from prefpred.models.lgbm import LightGBMModel
    from prefpred.models.tfidf import TfidfModel
    from prefpred.stack import LGBMStacker

    for obj in (LGBMStacker(num_leaves=5, seed=3), LightGBMModel(num_leaves=9, seed=4),
                TfidfModel(word_ngram=(1, 3), C=0.5)):
        params = obj.get_params()
        json.dumps(params)
        assert type(obj)(**params).get_params() == params
    assert LGBMStacker(num_leaves=5).get_params()["num_leaves"] == 5
    assert TfidfModel(word_ngram=(1, 3)).get_params()["word_ngram"] == [1, 3]
