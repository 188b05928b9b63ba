import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from prefpred.metrics import accuracy, brier, ece_per_class, log_loss, score_by
from prefpred.probabilities import softmax


@settings(max_examples=50, deadline=None)
@given(st.integers(5, 60), st.integers(0, 10_000))
def test_log_loss_and_brier_equal_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = softmax(rng.normal(size=(n, 3)) * 3)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]), rel=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p, labels=[0, 1, 2]), rel=1e-12)


def test_uniform_log_loss_is_ln3():
    y = np.array([0, 1, 2, 2])
    assert log_loss(y, np.full((4, 3), 1 / 3)) == pytest.approx(np.log(3))


def test_accuracy():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    assert accuracy(np.array([0, 0, 2]), p) == pytest.approx(2 / 3)


def test_ece_perfectly_calibrated_is_small_and_overconfident_is_large():
    rng = np.random.default_rng(0)
    n = 60_000
    p = softmax(rng.normal(size=(n, 3)))
    y = np.array([rng.choice(3, p=row) for row in p])
    assert ece_per_class(y, p).max() < 0.01
    sharp = softmax(np.log(p) * 3)
    assert ece_per_class(y, sharp).min() > 0.05


def test_ece_known_value():
    # class 0 forecast 0.8 on 10 rows, 5 hits -> |0.8 - 0.5| = 0.3
    p = np.tile([0.8, 0.1, 0.1], (10, 1))
    y = np.array([0] * 5 + [1] * 5)
    assert ece_per_class(y, p)[0] == pytest.approx(0.3)
    assert ece_per_class(y, p)[1] == pytest.approx(0.4)


def test_score_by_source():
    y = np.array([0, 1, 2, 0])
    p = np.full((4, 3), 1 / 3)
    t = score_by(y, p, ["a", "a", "b", "b"])
    assert t["group"].to_list() == ["a", "b", "ALL"]
    assert t["rows"].to_list() == [2, 2, 4]
