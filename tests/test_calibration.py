"""Calibrators: fits against known truths and scikit-learn, out-of-fold honesty, ECE and PNGs."""

import numpy as np
import polars as pl
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from prefpred.calibration import (
    CALIBRATORS,
    TemperatureByLength,
    TemperatureScaling,
    VectorScaling,
    calibrate_out_of_fold,
    fit_inverse_temperature,
    load_calibrator,
    make_calibrator,
    weighted_nll,
)
from prefpred.errors import ConfigError, DataError
from prefpred.features.lengths import pair_lengths
from prefpred.labels import CLASSES
from prefpred.metrics import ece_per_class, log_loss
from prefpred.models.prior import ClassPrior
from prefpred.oof import join_oof
from prefpred.probabilities import log_softmax, softmax
from prefpred.probabilities import sample_labels as draw
from prefpred.report import reliability_curve, write_reliability_png
from prefpred.stack import evaluate
from prefpred.stages import run_cv


@pytest.fixture(scope="module")
def overconfident():
    """True logits z (labels drawn from softmax(z)) and a model that reports 3 z."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 3))
    y = draw(softmax(z), 1)
    return 3.0 * z, y


class Passthrough(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose decision function is its input, for sklearn to calibrate."""

    def fit(self, X, y):
        self.classes_ = np.arange(3)
        return self

    def decision_function(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.asarray(X).argmax(1)


@pytest.mark.filterwarnings("ignore:Since FrozenEstimator does not appear to accept")
@pytest.mark.parametrize("weighted", [False, True])
def test_temperature_matches_sklearn_calibrated_classifier_cv(overconfident, weighted):
    """sklearn >= 1.8: CalibratedClassifierCV(method="temperature") on a frozen classifier whose
    decision function returns the logits fits the same inverse temperature."""
    logits, y = overconfident
    logits, y = logits[:5000], y[:5000]
    w = np.random.default_rng(3).uniform(0.2, 2.0, len(y)) if weighted else None
    ours = TemperatureScaling().fit(logits, y, w)
    clf = Passthrough().fit(logits, y)
    sk = CalibratedClassifierCV(FrozenEstimator(clf), method="temperature")
    sk.fit(logits, y, sample_weight=w)
    sk_beta = float(sk.calibrated_classifiers_[0].calibrators[0].beta_)
    assert ours.beta_ == pytest.approx(sk_beta, rel=1e-6)
    assert np.allclose(ours.predict_proba(logits), sk.predict_proba(logits), atol=1e-7)


def test_temperature_recovers_the_true_temperature(overconfident):
    logits, y = overconfident
    cal = TemperatureScaling().fit(logits, y)
    assert cal.temperature_ == pytest.approx(3.0, abs=0.1)
    # it is the minimum of the convex 1-D loss
    best = weighted_nll(cal.beta_ * logits, y)
    for beta in (cal.beta_ * 0.99, cal.beta_ * 1.01):
        assert weighted_nll(beta * logits, y) > best
    assert log_loss(y, cal.predict_proba(logits)) < log_loss(y, softmax(logits)) - 0.1


def test_temperature_of_uninformative_logits_flattens_the_forecast():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4000, 3)) * 4
    y = rng.integers(0, 3, 4000)
    assert fit_inverse_temperature(logits, y) < 0.05
    assert fit_inverse_temperature(np.zeros((10, 3)), np.arange(10) % 3) == 0.0


def test_vector_scaling_recovers_per_class_scale_and_bias():
    rng = np.random.default_rng(7)
    lp = log_softmax(rng.normal(size=(30_000, 3)) * 1.5)
    a, b = np.array([0.5, 0.8, 1.4]), np.array([0.3, -0.1, -0.2])
    y = draw(softmax(a * lp + b), 8)
    cal = VectorScaling().fit(lp, y)
    assert np.allclose(cal.scale_, a, atol=0.06)
    assert np.allclose(cal.bias_, b - b.mean(), atol=0.06)
    # a per-class miscalibration that one temperature cannot undo
    folds = np.arange(len(y)) % 5
    vec = log_loss(y, softmax(calibrate_out_of_fold(lp, y, folds, "vector")))
    temp = log_loss(y, softmax(calibrate_out_of_fold(lp, y, folds, "temperature")))
    assert vec < temp - 0.005


def test_temperature_by_length_fits_a_temperature_per_length_bin():
    rng = np.random.default_rng(11)
    n = 24_000
    lengths = rng.integers(50, 20_000, n).astype(float)
    z = rng.normal(size=(n, 3))
    y = draw(softmax(z), 12)
    short = lengths < np.median(lengths)
    reported = np.where(short[:, None], z, 3.0 * z)  # overconfident on long pairs only
    cal = TemperatureByLength(n_bins=2).fit(reported, y, lengths=lengths)
    assert 1.0 / cal.betas_[0] == pytest.approx(1.0, abs=0.1)
    assert 1.0 / cal.betas_[1] == pytest.approx(3.0, abs=0.25)
    folds = np.arange(n) % 5
    by_len = calibrate_out_of_fold(reported, y, folds, "temperature_by_length", lengths=lengths,
                                   params={"n_bins": 2})
    single = calibrate_out_of_fold(reported, y, folds, "temperature")
    assert log_loss(y, softmax(by_len)) < log_loss(y, softmax(single)) - 0.01
    with pytest.raises(ValueError, match="lengths"):
        cal.predict_logits(reported)


def test_pair_lengths_counts_all_turns(kaggle_table):
    lengths = pair_lengths(kaggle_table)
    df = kaggle_table.df
    row = 0
    expected = sum(len("".join(df[c][row])) for c in ("prompt", "response_a", "response_b"))
    assert lengths[row] == expected and len(lengths) == len(kaggle_table)


def test_calibration_out_of_fold_never_sees_the_fold_it_predicts(overconfident):
    logits, y = overconfident
    logits, y = logits[:3000], y[:3000].copy()
    folds = np.arange(3000) % 3
    for method in ("temperature", "vector"):
        before = calibrate_out_of_fold(logits, y, folds, method)
        y2 = y.copy()
        y2[folds == 0] = (y2[folds == 0] + 1) % 3  # scramble fold 0's labels
        after = calibrate_out_of_fold(logits, y2, folds, method)
        assert np.allclose(before[folds == 0], after[folds == 0])
        assert not np.allclose(before[folds == 1], after[folds == 1])


def _length_margin_logits(table, scale: float = 4.0) -> np.ndarray:
    """An overconfident length heuristic: the longer response wins, ties never."""
    df = table.df.select([pl.col(c).list.join("").str.len_chars().cast(pl.Float64).log1p()
                          .alias(c) for c in ("response_a", "response_b")])
    d = (df["response_a"] - df["response_b"]).to_numpy()
    return scale * np.stack([d, -d, np.full_like(d, -1.0)], axis=1)


def test_calibration_on_real_data_lowers_out_of_fold_log_loss_and_ece(shared_all, tmp_path):
    res = run_cv(shared_all, ClassPrior, name="prior", run_dir=tmp_path, progress=False)
    oof = join_oof({"prior": tmp_path / "prior" / "oof.parquet"})
    assert oof.ids == shared_all.ids and np.array_equal(oof.folds, res.folds)
    oof.logits = {"length": _length_margin_logits(shared_all)}
    table = evaluate(oof, calibrations=list(CALIBRATORS), lengths=pair_lengths(shared_all),
                     progress=False).scores
    overall = {r["calibration"]: r for r in table.filter(pl.col("group") == "ALL").to_dicts()}
    assert set(overall) == set(CALIBRATORS)
    raw = overall["none"]
    for method in ("temperature", "vector", "temperature_by_length"):
        assert overall[method]["log_loss"] < raw["log_loss"] - 0.05
        assert overall[method]["ece"] < raw["ece"] / 2
    # vector scaling learns that ties happen: better than any single temperature here
    assert overall["vector"]["log_loss"] < overall["temperature"]["log_loss"]
    assert set(table["group"]) == {*shared_all.sources(), "ALL"}


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_calibrators_save_and_load(method, overconfident, tmp_path):
    logits, y = overconfident
    logits, y = logits[:2000], y[:2000]
    lengths = np.arange(2000.0)
    cal = make_calibrator(method).fit(logits, y, lengths=lengths)
    path = cal.save(tmp_path / f"{method}.json")
    back = load_calibrator(path)
    assert type(back) is type(cal)
    assert np.array_equal(back.predict_logits(logits, lengths=lengths),
                          cal.predict_logits(logits, lengths=lengths))


def test_bad_calibrator_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown calibration method 'platt'"):
        make_calibrator("platt")
    bad = tmp_path / "cal.json"
    bad.write_text('{"kind": "something else"}')
    with pytest.raises(DataError, match="not a calibrator file"):
        load_calibrator(bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().predict_logits(np.zeros((2, 3)))


def test_oof_files_name_the_bad_row_and_column(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b", "c"], "source": ["s"] * 3, "fold": [0, 1, 1],
                          "label": [0, 1, 2], "logit_A": [0.0, float("nan"), 1.0],
                          "logit_B": [0.0] * 3, "logit_TIE": [0.0] * 3})
    path = tmp_path / "oof.parquet"
    frame.write_parquet(path)
    with pytest.raises(DataError) as err:
        join_oof({"m": path})
    assert str(err.value) == f"{path}: row 2, column 'logit_A': missing or non-finite value"
    with pytest.raises(DataError, match="column 'logit_TIE'"):
        join_oof({"m": frame.drop("logit_TIE")})


def test_reliability_curve_reproduces_ece_per_class(overconfident):
    logits, y = overconfident
    proba = softmax(logits)
    curve = reliability_curve(y, proba)
    ece = ece_per_class(y, proba)
    for k, name in enumerate(CLASSES):
        c = curve.filter(pl.col("class") == name)
        assert c["rows"].sum() == len(y)
        gap = (c["rows"] * (c["mean_proba"] - c["frequency"]).abs()).sum() / len(y)
        assert gap == pytest.approx(ece[k], abs=1e-12)
        assert ((c["mean_proba"] >= c["lower"]) & (c["mean_proba"] <= c["upper"])).all()


def test_reliability_diagram_is_a_png(overconfident, tmp_path):
    import matplotlib.image

    logits, y = overconfident
    cal = TemperatureScaling().fit(logits, y)
    path = write_reliability_png(tmp_path / "reliability.png", y,
                                 {"uncalibrated": softmax(logits),
                                  "temperature": cal.predict_proba(logits)}, title="shared-all")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 900
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]  # no temporary left


def test_kaggle_sample_smoke(kaggle_table):
    # 1,000 real rows, 5 folds: every method runs and returns finite calibrated logits
    y = kaggle_table.labels()
    folds = np.arange(len(y)) % 5
    logits = _length_margin_logits(kaggle_table)
    raw = log_loss(y, softmax(logits))
    for method in CALIBRATORS:
        out = calibrate_out_of_fold(logits, y, folds, method, lengths=pair_lengths(kaggle_table))
        assert np.isfinite(out).all()
        if method == "none":
            assert np.allclose(out, log_softmax(logits))
        else:  # the length margin is overconfident: every calibrator tempers it out of fold
            assert log_loss(y, softmax(out)) < raw - 0.01


@pytest.mark.parametrize(("y", "w", "message"), [
    ([0, 1], None, "2 labels for 3 rows"),
    ([0, 1, 3], None, "class indices 0 \\(A\\), 1 \\(B\\) or 2 \\(TIE\\)"),
    ([0, 1, -1], None, "class indices"),
    ([0, 1, 2], [1.0, -1.0, 1.0], "3 finite non-negative numbers"),
    ([0, 1, 2], [1.0, np.nan, 1.0], "3 finite non-negative numbers"),
    ([0, 1, 2], [1.0, 1.0], "3 finite non-negative numbers"),
])
def test_calibrators_and_tie_models_refuse_bad_labels_and_weights(y, w, message):
    from prefpred.rewards.models import RaoKupper

    with pytest.raises(ValueError, match=message):
        TemperatureScaling().fit(np.zeros((3, 3)), y, sample_weight=w)
    with pytest.raises(ValueError, match=message):
        RaoKupper().fit(np.zeros(3), y, sample_weight=w)
