"""Tie-aware reward calibration: each model recovers its own parameters, model choice, files."""

import numpy as np
import polars as pl
import pytest
from scipy.optimize import check_grad
from scipy.special import expit

from prefpred.errors import ConfigError, DataError
from prefpred.probabilities import softmax
from prefpred.rewards.calibrate import fit_reward_calibration
from prefpred.rewards.io import read_scores
from prefpred.rewards.models import (
    Davidson,
    MultinomialTie,
    RaoKupper,
    load_tie_model,
    make_tie_model,
    oof_tie_scores,
    reward_folds,
    uncalibrated_logits,
)

N = 20_000


@pytest.fixture(scope="module")
def margins():
    rng = np.random.default_rng(1)
    return rng.normal(size=N) * 2.0, rng.normal(size=(N, 2))


def true_model(name, coef, **params):
    model = make_tie_model(name, **params)
    model.coef_ = np.asarray(coef, dtype=float)
    return model


CASES = [
    ("rao-kupper", [1.3, 0.2, 0.7], {}),
    ("rao-kupper", [-0.8, 0.0, 0.3], {"position_bias": False}),
    ("davidson", [1.3, 0.2, -0.3], {}),
    ("davidson", [0.6, 0.0, 0.5], {"position_bias": False}),
    ("multinomial", [0.5, 1.0, -0.3, 0.4, -0.2, 0.3, -1.0, -0.2, 0.4, 0.1],
     {"features": ["f1", "f2"]}),
    ("multinomial", [0.2, 0.9, -0.5, 0.2, -0.9, -0.5], {"position_bias": False}),
]


@pytest.mark.parametrize(("name", "coef", "params"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_model_recovers_its_parameters_from_its_own_data(margins, name, coef, params):
    m, x = margins
    feats = x if params.get("features") else None
    truth = true_model(name, coef, **params)
    y = truth.simulate(m, feats, seed=3)
    fitted = make_tie_model(name, **params).fit(m, y, features=feats)
    se = np.array(list(fitted.standard_errors(m, y, features=feats).values()))
    free = fitted._free()
    assert (se[free] > 0).all() and (se[free] < 0.06).all()  # the check has power
    z = np.abs(fitted.coef_ - np.asarray(coef))[free] / se[free]
    assert (z < 4.5).all(), dict(zip(fitted._param_names(), fitted.coef_, strict=True))
    if not params.get("position_bias", True):  # no first-position advantage is fitted
        zero = np.zeros((1, 2)) if feats is not None else None
        p = fitted.predict_proba(np.zeros(1), zero)[0]
        assert p[0] == pytest.approx(p[1], abs=1e-12)
    # the fit is the maximum: better than the truth on this sample
    assert fitted.nll(m, y, features=feats) <= truth.nll(m, y, features=feats) + 1e-12


@pytest.mark.parametrize(("name", "coef", "params"), CASES[::2],
                         ids=[c[0] for c in CASES[::2]])
def test_analytic_gradients_match_finite_differences(margins, name, coef, params):
    m, x = margins
    m, x = m[:2000], x[:2000] if params.get("features") else np.zeros((2000, 0))
    model = make_tie_model(name, **params)
    y = true_model(name, coef, **params).simulate(m, x if x.size else None, seed=0)
    w = np.full(len(m), 1 / len(m))
    theta = np.asarray(coef) * 0.7 + 0.05
    err = check_grad(lambda t: model._nll_grad(t, m, x, y, w)[0],
                     lambda t: model._nll_grad(t, m, x, y, w)[1], theta)
    assert err < 1e-6


def test_models_follow_their_definitions():
    d_raw = np.linspace(-5, 5, 41)
    rk = true_model("rao-kupper", [1.5, 0.3, 0.8])
    p = rk.predict_proba(d_raw)
    d = 1.5 * d_raw + 0.3
    assert np.allclose(p[:, 0], expit(d - 0.8)) and np.allclose(p[:, 1], expit(-d - 0.8))
    assert np.allclose(p.sum(1), 1) and (p[:, 2] > 0).all()
    dv = true_model("davidson", [1.5, 0.3, np.log(0.7)])
    assert np.allclose(dv.predict_proba(d_raw),
                       softmax(np.stack([d / 2, -d / 2, np.full_like(d, np.log(0.7))], 1)))
    # far from equal rewards, Rao-Kupper's tie probability is still finite in log space
    far = rk.predict_logits(np.array([500.0, -500.0]))
    assert np.isfinite(far).all()
    # multinomial: the tie odds depend on a feature
    mn = true_model("multinomial", [0.0, 1.0, 0.0, 2.0, 0.0, -1.0, 0.0, 2.0],
                    features=["short"])
    lo, hi = mn.predict_proba(np.zeros(2), np.array([[0.0], [1.0]]))
    assert hi[2] < lo[2]
    assert np.allclose(uncalibrated_logits(np.array([0.0])), np.log(1 / 3))


def test_model_choice_by_out_of_fold_log_loss_finds_feature_dependent_ties(margins):
    m, x = margins
    truth = true_model("multinomial", [0.5, 1.0, 0.3, 1.5, 0.0, 0.5, -1.0, 0.3, 1.5, 0.0],
                       features=["length", "other"])
    y = truth.simulate(m, x, seed=4)
    folds = reward_folds(y, n_folds=5, seed=0)
    res = oof_tie_scores(m, y, folds, features=x, feature_names=["length", "other"])
    losses = {k: v["log_loss"] for k, v in res.items()}
    assert min(losses, key=losses.get) == "multinomial"
    assert losses["multinomial"] < min(losses["rao-kupper"], losses["davidson"]) - 0.02
    assert max(losses["rao-kupper"], losses["davidson"]) < losses["prior"]
    # and plain Rao-Kupper data is not mistaken for a richer model's by much
    y_rk = true_model("rao-kupper", [1.3, 0.2, 0.7]).simulate(m, seed=5)
    rk = oof_tie_scores(m, y_rk, folds, models=("rao-kupper", "davidson"))
    assert rk["rao-kupper"]["log_loss"] < rk["davidson"]["log_loss"]


def test_out_of_fold_tie_scores_do_not_see_the_held_out_fold(margins):
    m, _ = margins
    m = m[:3000]
    y = true_model("davidson", [1.0, 0.0, 0.0]).simulate(m, seed=1)
    folds = np.arange(3000) % 3
    before = oof_tie_scores(m, y, folds, models=("davidson",))["davidson"]["logits"]
    y2 = y.copy()
    y2[folds == 2] = 2
    after = oof_tie_scores(m, y2, folds, models=("davidson",))["davidson"]["logits"]
    assert np.allclose(before[folds == 2], after[folds == 2])


@pytest.mark.parametrize("name", ["rao-kupper", "davidson", "multinomial"])
def test_tie_models_save_and_reload(margins, name, tmp_path):
    m, x = margins
    params = {"features": ["f1", "f2"]} if name == "multinomial" else {}
    feats = x if params else None
    y = true_model("rao-kupper", [1.0, 0.1, 0.5]).simulate(m, seed=2)
    model = make_tie_model(name, **params).fit(m[:3000], y[:3000], features=None if feats is None
                                               else feats[:3000])
    back = load_tie_model(model.save(tmp_path / "m.json", note="x"))
    assert type(back) is type(model) and back.get_params() == model.get_params()
    assert np.array_equal(back.predict_proba(m[:50], None if feats is None else feats[:50]),
                          model.predict_proba(m[:50], None if feats is None else feats[:50]))


def test_tie_model_names_and_files_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="unknown tie model 'bt'"):
        make_tie_model("bt")
    bad = tmp_path / "m.json"
    bad.write_text('{"kind": "tie-model", "format_version": 2, "name": "davidson", '
                   '"params": {}, "state": {"coef_": [1.0]}}')
    with pytest.raises(DataError, match="coef_ needs 3 values"):
        load_tie_model(bad)
    assert RaoKupper().get_params() == Davidson().get_params() == {"position_bias": True,
                                                                   "tie_rate": None}
    assert MultinomialTie(features=["a"])._param_names()[-1] == "B:a"
    with pytest.raises(DataError, match="only 2 distinct groups for 5 folds"):
        reward_folds(np.arange(40) % 3, groups=np.arange(40) % 2)


# ----------------------------------------------------------------------------- scores files
def scores_frame(n=400, seed=0, label_style="text"):
    rng = np.random.default_rng(seed)
    ra, rb = rng.normal(size=n), rng.normal(size=n)
    y = true_model("rao-kupper", [2.0, 0.1, 0.6]).simulate(ra - rb, seed=seed)
    frame = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "reward_a": ra, "reward_b": rb,
                          "length": rng.normal(size=n)})
    if label_style == "text":
        words = np.array(["a", "B", "Tie"])
        frame = frame.with_columns(pl.Series("label", words[y]))
    elif label_style == "index":
        frame = frame.with_columns(pl.Series("label", y))
    elif label_style == "onehot":
        eye = np.eye(3, dtype=int)[y]
        frame = frame.with_columns(winner_model_a=eye[:, 0], winner_model_b=eye[:, 1],
                                   winner_tie=eye[:, 2])
    return frame, y


@pytest.mark.parametrize("style", ["text", "index", "onehot"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_scores_accepts_every_label_form(style, suffix, tmp_path):
    frame, y = scores_frame(label_style=style)
    path = tmp_path / f"s{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    scores = read_scores(path, require_labels=True, features=["length"])
    assert np.array_equal(scores.y, y)
    assert np.allclose(scores.margin, frame["reward_a"] - frame["reward_b"])
    assert scores.features.shape == (400, 1) and scores.ids[0] == "p0"


BAD_CASES = [
    ("drop reward_b", "column 'reward_b': missing column 'reward_b'"),
    ("reward_a row 3 = abc", "row 3, column 'reward_a': reward_a 'abc' is not a finite number"),
    ("label row 2 = winner?", "row 2, column 'label': label 'winner?' is not a known label"),
    ("id row 5 = p0", "row 5, column 'id': duplicate id 'p0'"),
    ("no labels", "column 'label': no labels to fit on"),
    ("length row 4 = ", "row 4, column 'length': length missing"),
]


@pytest.mark.parametrize(("case", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_scores_files_give_located_one_line_errors(case, message, tmp_path, cli):
    frame, _ = scores_frame(n=20)
    frame = frame.with_columns(pl.all().cast(pl.String))
    if case.startswith("drop"):
        frame = frame.drop("reward_b")
    elif case == "no labels":
        frame = frame.drop("label")
    else:
        col, rest = case.split(" row ")
        row, value = rest.split(" = ")
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == int(row) - 1).then(pl.lit(value or None))
            .otherwise(pl.col(col)).alias(col))
    path = tmp_path / "scores.csv"
    frame.write_csv(path)
    with pytest.raises(DataError) as err:
        read_scores(path, require_labels=True, features=["length"])
    assert str(err.value).startswith(f"{path}: {message}")
    res = cli("calibrate-rewards", "fit", "--scores", path, "--out", tmp_path / "m",
              "--feature", "length")
    assert res.code == 2
    assert res.err.strip().count("\n") == 0 and message in res.err
    assert not (tmp_path / "m").exists()


def test_fit_reward_calibration_writes_all_models_and_a_report(tmp_path):
    frame, _ = scores_frame(n=2000, seed=3, label_style="text")
    frame = frame.with_columns(pl.Series("group", [f"g{i // 4}" for i in range(2000)]))
    path = tmp_path / "s.parquet"
    frame.write_parquet(path)
    scores = read_scores(path, require_labels=True)
    result = fit_reward_calibration(scores, tmp_path / "model", seed=1)
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["calibrator.json", "davidson.json", "multinomial.json", "rao-kupper.json",
                     "report.json"]
    table = {r["model"]: r for r in result.scores.to_dicts()}
    assert set(table) == {"uncalibrated", "prior", "rao-kupper", "davidson", "multinomial"}
    best = min(("rao-kupper", "davidson", "multinomial"), key=lambda k: table[k]["oof_log_loss"])
    assert result.chosen == best and table[best]["chosen"]
    assert table[best]["oof_log_loss"] < table["prior"]["oof_log_loss"] - 0.05
    chosen = load_tie_model(tmp_path / "model" / "calibrator.json")
    assert chosen.name == best
    if best != "multinomial":  # the data are Rao-Kupper with scale 2
        assert result.model.params_["scale"] == pytest.approx(2.0, abs=0.3)
