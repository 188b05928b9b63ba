"""Soft targets and two-class rows: the restricted likelihood, its gradients, and every model
trained on them (one-hot soft labels reproduce hard-label training)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_tfidf import SMALL, synthetic

from prefpred import errors
from prefpred.data.table import PreferenceTable
from prefpred.labels import TIE, A, B
from prefpred.metrics import score
from prefpred.models.lgbm import LightGBMModel
from prefpred.models.logistic import fit_softmax_regression
from prefpred.models.prior import ClassPrior
from prefpred.models.tfidf import TfidfModel
from prefpred.probabilities import softmax
from prefpred.targets import (
    Targets,
    encode,
    expand_rows,
    masked_cross_entropy,
    masked_log_softmax,
    teacher_mix,
)


def random_targets(n: int, seed: int) -> Targets:
    rng = np.random.default_rng(seed)
    allowed = np.ones((n, 3), dtype=bool)
    allowed[rng.random(n) < 0.4, TIE] = False
    probs = rng.dirichlet(np.ones(3), n)
    probs[~allowed[:, TIE], TIE] = 0
    probs /= probs.sum(1, keepdims=True)
    return Targets(probs, allowed, rng.uniform(0.5, 2, n))


def test_two_class_likelihood_is_p_a_over_p_a_plus_p_b():
    z = np.array([[0.3, -1.2, 0.9]])
    t = Targets(np.array([[1.0, 0.0, 0.0]]), np.array([[True, True, False]]), np.ones(1))
    loss, _ = masked_cross_entropy(z, t)
    p = softmax(z)[0]
    assert loss[0] == pytest.approx(-np.log(p[A] / (p[A] + p[B])), rel=1e-12)
    # ... and a three-class row is ordinary cross-entropy
    t3 = Targets(np.array([[0.0, 0.0, 1.0]]), np.ones((1, 3), dtype=bool), np.ones(1))
    assert masked_cross_entropy(z, t3)[0][0] == pytest.approx(-np.log(p[TIE]), rel=1e-12)


def test_gradient_matches_finite_differences():
    t = random_targets(40, 0)
    z = np.random.default_rng(1).normal(size=(40, 3))
    _, grad = masked_cross_entropy(z, t)
    eps = 1e-6
    for c in range(3):
        dz = np.zeros_like(z)
        dz[:, c] = eps
        numeric = (masked_cross_entropy(z + dz, t)[0] - masked_cross_entropy(z - dz, t)[0]) / (2 * eps)
        np.testing.assert_allclose(grad[:, c], numeric, atol=1e-6)
    assert (grad[t.two_class, TIE] == 0).all()


def test_backbone_loss_reads_the_encoded_mask_and_matches_finite_differences():
    import torch

    from prefpred.models.backbone.train import soft_target_loss

    t = random_targets(30, 2)
    z = torch.tensor(np.random.default_rng(3).normal(size=(30, 3)), requires_grad=True)
    enc = torch.tensor(encode(t))
    w = torch.tensor(t.weight)
    loss = soft_target_loss(z, enc, w)
    loss.backward()
    ce, grad = masked_cross_entropy(z.detach().numpy(), t)
    entropy = -(np.where(t.probs > 0, t.probs * np.log(np.where(t.probs > 0, t.probs, 1)), 0)).sum(1)
    expected = ((ce - entropy) * t.weight).sum() / t.weight.sum()  # KL = CE - H(t)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(z.grad.numpy(), grad * (t.weight / t.weight.sum())[:, None],
                               atol=1e-6)


def test_softmax_regression_on_one_hot_targets_is_scikit_learns():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = (x[:, :3] + rng.normal(size=(300, 3))).argmax(1)
    w = rng.uniform(0.5, 1.5, 300)
    sk = LogisticRegression(C=0.7, tol=1e-10, max_iter=5000).fit(x, y, sample_weight=w)
    t = Targets(np.eye(3)[y], np.ones((300, 3), dtype=bool), w)
    coef, intercept = fit_softmax_regression(x, t, C=0.7, max_iter=5000, tol=1e-10)
    np.testing.assert_allclose(coef, sk.coef_, atol=1e-4)
    np.testing.assert_allclose(intercept, sk.intercept_, atol=1e-4)


def with_soft(table: PreferenceTable, soft: np.ndarray) -> PreferenceTable:
    return table.with_columns(soft_label=soft)


def test_tfidf_one_hot_soft_labels_reproduce_hard_training_and_soft_ones_move_it():
    table = synthetic(150, 0)
    test = synthetic(40, 1)
    hard = TfidfModel(**SMALL, min_df=1).fit(table).predict_logits(test)
    one_hot = np.eye(3)[table.labels()]
    same = TfidfModel(**SMALL, min_df=1).fit(with_soft(table, one_hot)).predict_logits(test)
    np.testing.assert_array_equal(hard, same)
    blurred = 0.5 * one_hot + 0.5 / 3
    soft = TfidfModel(**SMALL, min_df=1).fit(with_soft(table, blurred)).predict_logits(test)
    assert softmax(soft).max(1).mean() < softmax(hard).max(1).mean()  # less sure


def two_class(table: PreferenceTable) -> PreferenceTable:
    """The decisive rows of a table, marked as judged without a tie option."""
    decisive = table.filter(pl.col("label") != TIE)
    return decisive.with_columns(tie_allowed=np.zeros(len(decisive), dtype=bool))


def test_tfidf_learns_from_two_class_rows_without_learning_the_tie_rate():
    table = synthetic(200, 0)
    test = synthetic(60, 1)
    y = test.labels()
    both = PreferenceTable.concat([table.take(np.arange(100)), two_class(table.take(
        np.arange(100, 200)))])
    model = TfidfModel(**SMALL, min_df=1).fit(both)
    p = softmax(model.predict_logits(test))
    decisive = y != TIE
    # it orders A and B from the words of both kinds of rows
    assert (p[decisive, :2].argmax(1) == y[decisive]).mean() > 0.9
    only_two = TfidfModel(**SMALL, min_df=1).fit(two_class(table))
    q = softmax(only_two.predict_logits(test))
    assert (q[decisive, :2].argmax(1) == y[decisive]).mean() > 0.9
    # the two-class rows' likelihood never pushes the tie logit: it stays where L2 holds it
    assert np.abs(only_two.clf_.coef_[TIE]).max() < 1e-6


def test_lightgbm_soft_targets_equal_explicit_weighted_copies(shared_all):
    # no swap augmentation: the copies are then in the expansion's row order (bagging samples
    # by position)
    fast = {"n_estimators": 30, "learning_rate": 0.2, "early_stopping_rounds": 0,
            "num_leaves": 7, "feature_cache": None, "swap_augment": False}
    table = shared_all.take(np.arange(400))
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(3), len(table))
    rows, classes, weight = expand_rows(Targets(soft, np.ones_like(soft, bool), table.weights()))
    copies = table.take(rows).with_columns(
        id=pl.Series([f"{i}~{c}" for i, c in zip(rows, classes, strict=True)]),
        label=classes, weight=weight)
    test = shared_all.take(np.arange(400, 500))
    a = LightGBMModel(**fast).fit(with_soft(table, soft)).predict_logits(test)
    b = LightGBMModel(**fast).fit(copies).predict_logits(test)
    np.testing.assert_allclose(a, b, atol=1e-9)
    hard = LightGBMModel(**fast).fit(table).predict_logits(test)
    assert np.abs(a - hard).max() > 1e-3


def test_lightgbm_leaves_two_class_rows_out_and_says_so(shared_all, capsys):
    fast = {"n_estimators": 20, "early_stopping_rounds": 0, "num_leaves": 7, "feature_cache": None}
    table = shared_all.take(np.arange(300))
    mixed = PreferenceTable.concat([table, two_class(shared_all.take(np.arange(300, 500)))])
    errors._noticed.clear()
    model = LightGBMModel(**fast).fit(mixed)
    assert model.dropped_two_class_ == len(mixed) - 300
    assert "LightGBM leaves out the pairs judged without a tie option" in capsys.readouterr().err
    test = shared_all.take(np.arange(500, 550))
    np.testing.assert_array_equal(model.predict_logits(test),
                                  LightGBMModel(**fast).fit(table).predict_logits(test))


def test_prior_counts_soft_mass_and_ignores_two_class_rows_for_the_tie_rate():
    table = synthetic(90, 0)
    soft = np.tile([0.2, 0.2, 0.6], (90, 1))
    prior = ClassPrior(smoothing=0).fit(with_soft(table, soft))
    np.testing.assert_allclose(np.exp(prior.log_prior_), [0.2, 0.2, 0.6])
    extra = two_class(synthetic(60, 1))
    extra = extra.with_columns(id=pl.Series([f"x{i}" for i in range(len(extra))]))
    mixed = PreferenceTable.concat([with_soft(table, soft), extra])
    again = ClassPrior(smoothing=0).fit(mixed)
    np.testing.assert_allclose(again.log_prior_, prior.log_prior_)


def test_scores_restrict_two_class_rows_and_report_cross_entropy_against_votes():
    proba = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    y = np.array([A, TIE])
    allowed = np.array([[True, True, False], [True, True, True]])
    out = score(y, proba, allowed=allowed, soft=np.array([[np.nan] * 3, [0.25, 0.25, 0.5]]))
    assert out["log_loss"] == pytest.approx(-(np.log(0.5 / 0.8) + np.log(0.6)) / 2)
    assert out["ce_soft"] == pytest.approx(-(0.25 * np.log(0.2) * 2 + 0.5 * np.log(0.6)))


def test_teacher_mix_keeps_two_class_rows_tieless():
    t = random_targets(20, 5)
    z = np.random.default_rng(6).normal(size=(20, 3))
    mixed = teacher_mix(t, z, 0.6, temperature=2.0)
    assert (mixed.probs[t.two_class, TIE] == 0).all()
    np.testing.assert_allclose(mixed.probs.sum(1), 1)
    teacher = np.exp(masked_log_softmax(z / 2.0, t.allowed))
    np.testing.assert_allclose(mixed.probs, 0.4 * t.probs + 0.6 * np.where(t.allowed, teacher, 0))


@pytest.mark.parametrize("name", ["blend", "logistic", "lgbm"])
def test_stackers_fit_soft_targets_as_weighted_copies(name):
    from prefpred.oof import OOFData
    from prefpred.stack import make_stacker

    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    logits = {"m1": rng.normal(size=(n, 3)) + np.eye(3)[y], "m2": rng.normal(size=(n, 3))}
    soft = np.full((n, 3), np.nan)
    soft[:150] = rng.dirichlet(np.ones(3), 150)
    data = OOFData(ids=[str(i) for i in range(n)], y=y, folds=np.arange(n) % 3,
                   sources=np.array(["s"] * n), logits=logits, soft=soft)
    probs = np.where(np.isnan(soft).any(1)[:, None], np.eye(3)[y], soft)
    rows, classes, weights = expand_rows(Targets(probs, np.ones((n, 3), bool), np.ones(n)))
    fitted = make_stacker(name).fit_data(data)
    copies = make_stacker(name).fit({k: v[rows] for k, v in logits.items()}, classes, None,
                                    weights, data.folds[rows])
    np.testing.assert_allclose(fitted.predict_logits(logits), copies.predict_logits(logits),
                               atol=1e-9)
    plain = make_stacker(name).fit_data(OOFData(ids=data.ids, y=y, folds=data.folds,
                                                sources=data.sources, logits=logits))
    assert np.abs(fitted.predict_logits(logits) - plain.predict_logits(logits)).max() > 1e-6


def test_inspect_counts_two_class_rows_votes_and_soft_labels(cli):
    from conftest import DATA, PANDALM

    out = cli("data", "inspect", DATA / "llmbar").out
    assert "two-class rows (judged without a tie option): 419" in out
    assert "votes per row: 3: 999 rows" in cli("data", "inspect", PANDALM).out


def test_soft_scoring_targets_are_the_votes_not_a_label_rebuilt_from_them():
    from prefpred.metrics import table_scoring

    votes = [[{"judge": "a", "label": A}, {"judge": "b", "label": A}, {"judge": "c", "label": TIE}],
             [{"judge": "a", "label": B}], None, None]
    table = PreferenceTable.from_frame(pl.DataFrame({
        "id": list("wxyz"), "prompt": [["p"]] * 4, "response_a": [["r"]] * 4,
        "response_b": [["s"]] * 4, "label": [A, B, TIE, A], "votes": votes,
        "soft_label": [[0.9, 0.0, 0.1], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8], None]}))
    soft = table_scoring(table)["soft"]
    np.testing.assert_allclose(soft[0], [2 / 3, 0, 1 / 3])  # the votes, not the soft label
    assert np.isnan(soft[1]).all() and np.isnan(soft[3]).all()  # one vote / nothing to score
    np.testing.assert_allclose(soft[2], [0.1, 0.1, 0.8])  # a soft label given as data
    assert table_scoring(synthetic(5, 0))["soft"] is None
