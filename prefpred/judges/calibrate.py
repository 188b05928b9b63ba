"""A judge's output as calibrated probabilities, estimated out of fold (folds grouped by prompt,
stratified by label: :func:`prefpred.rewards.models.reward_folds`).

Two-way probabilities (A, B) where the gold labels have no ties, three-way (A, B, TIE) where
they do. Three maps, each scored against its uncalibrated reading and the class prior:

- ``verdict_pairs``: the verdicts of the two orders as one cell of a table (A / B / TIE / missing
  / not asked, per order); a cell's probabilities are its training-fold label counts smoothed
  towards the training-fold class prior with ``alpha`` pseudo-counts (Dirichlet / add-alpha):
  ``(n_ck + alpha * prior_k) / (n_c + alpha)``. Uncalibrated: the vote share of the answered
  verdicts (a tie vote split evenly where gold has no ties; no answer: uniform).
- ``scores``: the margin ``score_a - score_b`` (a missing score: margin 0). Three-way: the tie
  models of :mod:`prefpred.rewards.models` (Rao-Kupper, Davidson, multinomial), uncalibrated
  ``softmax(m/2, -m/2, 0)``; two-way: a logistic on the margin (slope and intercept: the
  intercept is a position bias), uncalibrated ``sigmoid(m)``.
- ``token_probabilities``: the verdict-token log-probabilities (the mean over the orders given);
  three-way: temperature scaling (:mod:`prefpred.calibration`), two-way: a logistic on
  ``logp_a - logp_b`` without intercept (temperature scaling of the two-way logit);
  uncalibrated: the renormalised token probabilities.

Scores: log loss (:func:`prefpred.metrics.log_loss`), multi-class Brier (sum over classes),
ECE (15 equal bins; three-way: the mean of the per-class ECEs, two-way: the ECE of P(A)).
Uncalibrated probabilities are clipped to :data:`prefpred.probabilities.PROBABILITY_FLOOR`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from prefpred.data.folds import out_of_fold
from prefpred.judges.io import NOT_ASKED, Judgments
from prefpred.labels import N_CLASSES, TIE, A, B
from prefpred.metrics import brier, ece_per_class, log_loss
from prefpred.probabilities import PROBABILITY_FLOOR, softmax

MIN_ROWS = 20


def _floor(p: np.ndarray, k: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).copy()
    p[:, :k] = np.maximum(p[:, :k], PROBABILITY_FLOOR)
    p[:, k:] = 0.0
    return p / p.sum(1, keepdims=True)


def scores_of(y: np.ndarray, proba: np.ndarray, k: int) -> dict[str, float]:
    ece = ece_per_class(y, proba)
    return {"log_loss": log_loss(y, proba), "brier": brier(y, proba),
            "ece": float(ece.mean() if k == N_CLASSES else ece[A])}


def fit_logistic(x: np.ndarray, t: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
    """Coefficients of ``P(t = 1) = sigmoid(x @ coef)`` by maximum likelihood with a small L2
    penalty (convex; L-BFGS with the analytic gradient)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)

    def loss(c):
        z = x @ c
        nll = -(t * log_expit(z) + (1 - t) * log_expit(-z)).mean() + ridge * (c @ c)
        grad = x.T @ (expit(z) - t) / len(t) + 2 * ridge * c
        return nll, grad

    return minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x


def _two_way(p_a: np.ndarray) -> np.ndarray:
    return np.column_stack([p_a, 1 - p_a, np.zeros_like(p_a)])


def _oof_logistic(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    t = (y == A).astype(np.float64)

    def fit_predict(_k, train, held):
        return _two_way(expit(x[held] @ fit_logistic(x[train], t[train])))

    return out_of_fold(folds, fit_predict)


def _prior(y: np.ndarray, folds: np.ndarray, k: int) -> np.ndarray:
    def fit_predict(_k, train, held):
        counts = np.bincount(y[train], minlength=N_CLASSES)[:N_CLASSES].astype(float)
        counts[:k] += 1.0
        return np.tile(counts / counts.sum(), (len(held), 1))

    return out_of_fold(folds, fit_predict)


def verdict_cells(data: Judgments) -> np.ndarray:
    """Cell index 0..24 of each pair's (verdict, verdict_swapped), codes -2..2 each."""
    return (data.verdict.astype(int) + 2) * 5 + (data.verdict_swapped.astype(int) + 2)


def vote_share(data: Judgments, k: int) -> np.ndarray:
    """Uncalibrated: the share of the answered verdicts for each class."""
    votes = np.zeros((len(data), N_CLASSES))
    for v in (data.verdict.astype(int), data.verdict_swapped.astype(int)):
        for c in (A, B, TIE):
            hit = (v == c).astype(float)
            if c == TIE and k == 2:
                votes[:, A] += hit / 2
                votes[:, B] += hit / 2
            else:
                votes[:, c] += hit
    none = votes.sum(1) == 0
    votes[none, :k] = 1.0
    return _floor(votes / votes.sum(1, keepdims=True), k)


def _oof_cells(cells: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int,
               alpha: float) -> np.ndarray:
    def fit_predict(_k, train, held):
        prior = np.bincount(y[train], minlength=N_CLASSES)[:N_CLASSES].astype(float)
        prior[:k] += 1.0
        prior /= prior.sum()
        counts = np.zeros((25, N_CLASSES))
        np.add.at(counts, (cells[train], y[train]), 1.0)
        table = (counts + alpha * prior) / (counts.sum(1, keepdims=True) + alpha)
        return table[cells[held]]

    return out_of_fold(folds, fit_predict)


def _token_logits(data: Judgments) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the given orders of the floored verdict-token log-probabilities; rows with no
    probabilities are 0 (uniform) and flagged."""
    stack = np.stack([data.logp, data.logp_swapped])
    stack = np.where(np.isneginf(stack), np.log(PROBABILITY_FLOOR), stack)
    stack = np.maximum(stack, np.log(PROBABILITY_FLOOR))
    given = ~np.isnan(stack).any(2)
    total = np.nansum(np.where(given[..., None], stack, 0.0), axis=0)
    n = given.sum(0)
    return np.where(n[:, None] > 0, total / np.maximum(n, 1)[:, None], 0.0)


def calibration_table(data: Judgments, *, n_folds: int = 5, seed: int = 0, alpha: float = 1.0
                      ) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray | None]:
    """Rows ``{map, method, log_loss, brier, ece, n}`` for the class prior and every map the
    judgments allow, the probabilities behind them (for reliability diagrams) and the labels.
    Only labelled pairs are used; fewer than :data:`MIN_ROWS` (or too few prompt groups for
    the folds) gives no table."""
    from prefpred.rewards.models import reward_folds

    lab = data.take(data.y >= 0)
    y = lab.y.astype(np.int64)
    k = N_CLASSES if lab.gold_has_ties else 2
    n_groups = len(np.unique(lab.group.astype(str)))
    folds_n = min(n_folds, n_groups, len(y) // 4)
    if len(y) < MIN_ROWS or folds_n < 2 or len(np.unique(y)) < 2:
        return [], {}, None
    folds = reward_folds(y, lab.group.astype(str), folds_n, seed)
    probs: dict[str, np.ndarray] = {"prior": _prior(y, folds, k)}
    rows = [{"map": "prior", "method": "class prior (out of fold)"}]

    def add(map_name: str, method: str, p: np.ndarray) -> None:
        probs[f"{map_name}:{method}"] = p
        rows.append({"map": map_name, "method": method})

    if (lab.verdict != NOT_ASKED).any():
        add("verdict_pairs", "uncalibrated", vote_share(lab, k))
        add("verdict_pairs", f"add-{alpha:g} table", _oof_cells(verdict_cells(lab), y, folds,
                                                                  k, alpha))
    if lab.has_scores:
        m = np.nan_to_num(lab.score_a - lab.score_b, nan=0.0)
        if k == 2:
            add("scores", "uncalibrated", _floor(_two_way(expit(m)), 2))
            add("scores", "logistic", _oof_logistic(np.column_stack([np.ones_like(m), m]), y,
                                                    folds))
        else:
            from prefpred.rewards.models import (
                TIE_MODELS,
                oof_tie_logits,
                tie_model_params,
                uncalibrated_logits,
            )

            add("scores", "uncalibrated", _floor(softmax(uncalibrated_logits(m)), 3))
            for name in TIE_MODELS:
                add("scores", name, softmax(oof_tie_logits(name, m, y, folds,
                                                           params=tie_model_params(name))))
    if lab.has_logp:
        z = _token_logits(lab)
        if k == 2:
            d = z[:, A] - z[:, B]
            add("token_probabilities", "uncalibrated", _floor(_two_way(expit(d)), 2))
            add("token_probabilities", "temperature", _oof_logistic(d[:, None], y, folds))
        else:
            from prefpred.calibration import calibrate_out_of_fold

            add("token_probabilities", "uncalibrated", _floor(softmax(z), 3))
            add("token_probabilities", "temperature",
                softmax(calibrate_out_of_fold(z, y, folds, "temperature")))
    for row, p in zip(rows, probs.values(), strict=True):
        row.update(scores_of(y, p, k))
        row["n"] = len(y)
        row["classes"] = k
    return rows, probs, y

