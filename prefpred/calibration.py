"""Calibrators fitted on out-of-fold logits, and calibrated logits estimated out of fold.

Every calibrator maps logits (n, 3) in class order (A, B, TIE) to calibrated logits (log-
probabilities; :func:`prefpred.metrics.softmax` of them gives the probabilities):

- ``temperature``: ``z / T``, one parameter, fitted by a safeguarded Newton search on the convex
  1-D log loss in the inverse temperature ``1 / T``.
- ``vector``: ``a * log_softmax(z) + b``, a scale and a bias per class (L-BFGS, convex).
- ``temperature_by_length``: one temperature per length bin (quantile bins of a per-row length,
  e.g. :func:`prefpred.features.lengths.pair_lengths`), for models whose confidence drifts
  with length.
- ``none``: the identity (the uncalibrated softmax).

Calibrators are fitted on out-of-fold output only. :func:`calibrate_out_of_fold` estimates the
calibrated score itself out of fold (fit on the other CV folds, apply to this one), using the fold
ids saved in ``oof.parquet`` (:mod:`prefpred.oof`), so a reported gain is honest. Calibrators are
saved and loaded through :class:`prefpred.saved.SavedEstimator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize

from prefpred.data.folds import out_of_fold
from prefpred.errors import notice
from prefpred.labels import N_CLASSES, check_label_mix, check_labels_and_weights
from prefpred.probabilities import log_softmax, softmax
from prefpred.registry import NonNegative, Positive
from prefpred.saved import SavedEstimator, Spec


# --------------------------------------------------------------------------- helpers
def _check_inputs(logits: np.ndarray, y: np.ndarray | None = None,
                  sample_weight: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != N_CLASSES:
        raise ValueError(f"expected logits of shape (n, {N_CLASSES}), got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    yy, w = check_labels_and_weights(y, sample_weight, len(z))
    if yy is not None:
        check_label_mix(yy, "calibration")
    return z, yy, w


def weighted_nll(logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
                 ) -> float:
    """Weighted mean negative log-likelihood of labels under softmax(logits) (no clipping)."""
    z, y, w = _check_inputs(logits, y, sample_weight)
    lp = log_softmax(z)[np.arange(len(z)), y]
    return float(-(w * lp).sum() / w.sum())


#: The logit spread at which a separable fit stops sharpening (a confidence of 1 - 1e-12).
SEPARABLE_SPREAD = float(np.log(1e12))


def fit_inverse_temperature(logits: np.ndarray, y: np.ndarray,
                            sample_weight: np.ndarray | None = None, *, tol: float = 1e-10,
                            max_beta: float = 1e4) -> float:
    """The ``beta = 1 / T`` that minimises the log loss of ``softmax(beta * logits)``.

    The loss is convex in beta (its second derivative is the weighted variance of the logit
    under the forecast), so the minimiser is the root of the increasing first derivative: a
    bracket ``[0, hi]`` is grown until the derivative turns positive, then Newton steps are taken
    inside the bracket, falling back to bisection when a step would leave it.

    When the logits separate the labels, the loss keeps falling as beta grows: beta is then
    capped where the median row's logit spread is ``ln(1e12)`` (a confidence of 1 - 1e-12),
    and a notice says so.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    if w.sum() <= 0:
        raise ValueError("sample weights sum to zero")
    w = w / w.sum()
    z = z - z.mean(axis=1, keepdims=True)
    z_true = z[np.arange(len(z)), y]

    def derivatives(beta: float) -> tuple[float, float]:
        p = softmax(beta * z)
        mean = (p * z).sum(1)
        var = (p * z * z).sum(1) - mean * mean
        return float((w * (mean - z_true)).sum()), float((w * np.maximum(var, 0.0)).sum())

    g0, _ = derivatives(0.0)
    if g0 >= 0:  # the logits carry no usable signal: the flat forecast is best
        return 0.0
    spread = float(np.median(z.max(1) - z.min(1)))
    cap = min(max_beta, SEPARABLE_SPREAD / spread) if spread > 0 else max_beta
    lo, hi = 0.0, 1.0
    while derivatives(hi)[0] < 0:
        lo, hi = hi, hi * 2.0
        if hi > cap and derivatives(cap)[0] < 0:
            notice(f"temperature scaling: the logits separate the labels (almost) perfectly; "
                   f"1/T is capped at {cap:.4g}")
            return float(cap)
    beta = min(1.0, hi) if lo == 0.0 else (lo + hi) / 2
    for _ in range(200):
        g, h = derivatives(beta)
        if abs(g) < tol:
            break
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else np.nan
        beta = step if lo < step < hi else (lo + hi) / 2
        if hi - lo < tol * max(1.0, beta):
            break
    return float(beta)


# --------------------------------------------------------------------------- calibrators
class Calibrator(SavedEstimator):
    """Base class: ``fit(logits, y, sample_weight=None, lengths=None)``,
    ``predict_logits(logits, lengths=None)`` (calibrated logits: log-probabilities)."""

    kind = "calibrator"
    what = "calibration method"
    registry: ClassVar[dict[str, type[SavedEstimator]]] = {}
    needs_lengths: ClassVar[bool] = False

    def fit(self, logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            *, lengths: np.ndarray | None = None) -> Calibrator:
        raise NotImplementedError

    def predict_logits(self, logits: np.ndarray, *, lengths: np.ndarray | None = None
                       ) -> np.ndarray:
        raise NotImplementedError

    def _lengths(self, lengths: np.ndarray | None, n: int) -> np.ndarray:
        if lengths is None:
            raise ValueError(f"the {self.name} calibrator needs per-row lengths "
                             "(e.g. prefpred.features.lengths.pair_lengths(table))")
        lengths = np.asarray(lengths, dtype=np.float64)
        if lengths.shape != (n,):
            raise ValueError(f"{len(lengths)} lengths for {n} rows")
        return lengths


class Identity(Calibrator):
    """No calibration: the model's own softmax (a baseline to compare against)."""

    name = "none"

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> Identity:
        _check_inputs(logits, y, sample_weight)
        return self

    def predict_logits(self, logits, *, lengths=None) -> np.ndarray:
        return log_softmax(_check_inputs(logits)[0])


class TemperatureScaling(Calibrator):
    """``softmax(logits / T)`` with T fitted by maximum likelihood (``beta_ = 1 / T``)."""

    name = "temperature"
    _state = {"beta_": Spec(low=0.0)}

    def __init__(self) -> None:
        self.beta_: float | None = None

    @property
    def temperature_(self) -> float:
        self._check_fitted()
        return float("inf") if self.beta_ == 0 else 1.0 / self.beta_

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> TemperatureScaling:
        self.beta_ = fit_inverse_temperature(logits, y, sample_weight)
        return self

    def predict_logits(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        return log_softmax(self.beta_ * _check_inputs(logits)[0])


#: Vector scaling coefficients beyond this mean separable logits: refitted with SEPARABLE_L2.
RUNAWAY = 100.0
SEPARABLE_L2 = 1e-2


class VectorScaling(Calibrator):
    """``a * log_softmax(logits) + b``: a scale and a bias per class, maximum likelihood.

    Acting on log-probabilities makes the result independent of a model's arbitrary per-row
    logit shift. ``l2`` (default tiny) pulls (a, b) towards (1, 0) so that the fit is unique even
    when a class's log-probability barely varies (e.g. the class prior).
    """

    name = "vector"
    _state = {"scale_": Spec(ndim=1), "bias_": Spec(ndim=1)}

    def __init__(self, l2: NonNegative = 1e-6) -> None:
        self.l2 = l2
        self.scale_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def _check_state(self) -> None:
        if self.scale_.shape != (N_CLASSES,) or self.bias_.shape != (N_CLASSES,):
            raise ValueError(f"scale_ and bias_ need {N_CLASSES} values each")

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> VectorScaling:
        z, y, w = _check_inputs(logits, y, sample_weight)
        z = log_softmax(z)
        w = w / w.sum()
        onehot = np.eye(N_CLASSES)[y]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = theta[:N_CLASSES], theta[N_CLASSES:]
            lp = log_softmax(a * z + b)
            resid = w[:, None] * (np.exp(lp) - onehot)  # d loss / d logit
            pen = self.l2 * (((a - 1) ** 2).sum() + (b ** 2).sum())
            value = -(w * (lp * onehot).sum(1)).sum() + pen
            grad = np.concatenate([(resid * z).sum(0) + 2 * self.l2 * (a - 1),
                                   resid.sum(0) + 2 * self.l2 * b])
            return float(value), grad

        theta0 = np.concatenate([np.ones(N_CLASSES), np.zeros(N_CLASSES)])
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
        if np.abs(res.x).max() > RUNAWAY:  # separable: keep the coefficients finite
            l2, self.l2 = self.l2, max(self.l2, SEPARABLE_L2)
            try:
                res = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                               options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
            finally:
                self.l2 = l2
            notice(f"vector scaling: the logits separate the labels (almost) perfectly; fitted "
                   f"with l2 = {SEPARABLE_L2:g} so its coefficients stay finite")
        self.scale_ = res.x[:N_CLASSES].copy()
        self.bias_ = res.x[N_CLASSES:] - res.x[N_CLASSES:].mean()  # softmax ignores a shift
        return self

    def predict_logits(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        return log_softmax(self.scale_ * log_softmax(_check_inputs(logits)[0]) + self.bias_)


class TemperatureByLength(Calibrator):
    """One temperature per length bin; bins are quantiles of ``log1p(length)`` on the fit data.

    A bin with fewer than ``min_rows`` rows uses the temperature fitted on all rows.
    """

    name = "temperature_by_length"
    needs_lengths = True
    _state = {"edges_": Spec(ndim=1), "betas_": Spec(ndim=1, low=0.0),
              "global_beta_": Spec(low=0.0)}

    def __init__(self, n_bins: Positive = 4, min_rows: Positive = 50) -> None:
        self.n_bins = n_bins
        self.min_rows = min_rows
        self.edges_: np.ndarray | None = None
        self.betas_: np.ndarray | None = None
        self.global_beta_: float | None = None

    def _check_state(self) -> None:
        if len(self.betas_) != len(self.edges_) + 1:
            raise ValueError(f"{len(self.edges_)} bin edges need {len(self.edges_) + 1} "
                             f"temperatures, got {len(self.betas_)}")
        if (np.diff(self.edges_) <= 0).any():
            raise ValueError("bin edges must increase")

    def _bins(self, lengths: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges_, np.log1p(np.maximum(lengths, 0.0)), side="right")

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> TemperatureByLength:
        z, y, w = _check_inputs(logits, y, sample_weight)
        lengths = self._lengths(lengths, len(z))
        x = np.log1p(np.maximum(lengths, 0.0))
        self.edges_ = np.unique(np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1]))
        self.global_beta_ = fit_inverse_temperature(z, y, w)
        bins = self._bins(lengths)
        betas = np.full(len(self.edges_) + 1, self.global_beta_)
        for k in range(len(betas)):
            m = bins == k
            if m.sum() >= self.min_rows:
                betas[k] = fit_inverse_temperature(z[m], y[m], w[m])
        self.betas_ = betas
        return self

    def predict_logits(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        z = _check_inputs(logits)[0]
        beta = self.betas_[self._bins(self._lengths(lengths, len(z)))]
        return log_softmax(beta[:, None] * z)


CALIBRATORS = Calibrator.registry


def make_calibrator(method: str, **params: Any) -> Calibrator:
    """A fresh calibrator by name (``none``, ``temperature``, ``vector``, ``temperature_by_length``)."""
    return Calibrator.create(method, **params)


def load_calibrator(path: str | Path) -> Calibrator:
    """Read and validate a calibrator written by :meth:`Calibrator.save`."""
    return Calibrator.load(path)


# --------------------------------------------------------------------------- out of fold
def calibrate_out_of_fold(
    logits: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    method: str | Calibrator = "temperature",
    *,
    sample_weight: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Calibrated logits in which each fold's rows come from a calibrator fitted on the others.

    ``folds`` are the CV fold ids of the rows (``oof.parquet``'s ``fold`` column), so the
    calibrated score is estimated out of fold exactly as the base model's score was.
    """
    z, y, w = _check_inputs(logits, y, sample_weight)
    folds = np.asarray(folds)
    if folds.shape != (len(z),):
        raise ValueError(f"{len(folds)} fold ids for {len(z)} rows")
    name = method if isinstance(method, str) else method.name
    base_params = dict(params or {}) if isinstance(method, str) else method.get_params()

    def fit_predict(_k: int, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        cal = make_calibrator(name, **base_params)
        cal.fit(z[train], y[train], w[train],
                lengths=lengths[train] if lengths is not None else None)
        return cal.predict_logits(z[held], lengths=lengths[held] if lengths is not None else None)

    return out_of_fold(folds, fit_predict)
