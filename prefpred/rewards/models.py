"""Tie-aware models that turn a reward margin into calibrated (A, B, TIE) probabilities.

A reward model scores each response alone; the margin ``m = reward_a - reward_b`` says how much
better A looks. Bradley-Terry (what TRL and OpenRLHF train) has no tie outcome, so these models
add one, all fitted by maximum likelihood on a convex negative log-likelihood:

- :class:`RaoKupper`: ``d = s * m + b``; ``P(A) = sigmoid(d - eta)``, ``P(B) = sigmoid(-d - eta)``,
  ``P(TIE)`` the rest (``eta >= 0``). It is the ordered logit with cut points ``-eta, eta``.
- :class:`Davidson`: ``softmax(d / 2, -d / 2, log nu)``.
- :class:`MultinomialTie`: a multinomial logistic on ``(1, m, |m|, features...)`` with TIE as the
  reference class, so the tie odds may depend on ``|m|`` and on features (e.g. lengths).

``b`` is the position bias (does the first response win more often at equal rewards); set
``position_bias=False`` to fix it at 0. :func:`oof_tie_scores` compares the models by
out-of-fold log loss; they are saved and loaded through :class:`prefpred.saved.SavedEstimator`
(a loaded model is validated: Rao-Kupper's ``eta`` must be positive, a fixed position bias 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from prefpred.data.folds import out_of_fold, split_folds
from prefpred.errors import ConfigError, DataError, notice
from prefpred.labels import (
    CLASSES,
    N_CLASSES,
    TIE,
    A,
    B,
    check_label_mix,
    check_labels_and_weights,
)
from prefpred.metrics import log_loss
from prefpred.probabilities import log_softmax, sample_labels, softmax
from prefpred.registry import NonNegative, OpenFraction
from prefpred.saved import SavedEstimator, Spec

_MIN_ETA = 1e-6
#: A slope beyond this, on standardised scores, means the scores separate the labels: the fit is
#: redone with an L2 penalty of RIDGE on those coefficients (and says so).
RUNAWAY = 40.0
RIDGE = 1e-3


def _check(margin: np.ndarray, y: np.ndarray | None = None,
           sample_weight: np.ndarray | None = None, features: np.ndarray | None = None,
           n_features: int = 0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    m = np.asarray(margin, dtype=np.float64)
    if m.ndim != 1:
        raise ValueError(f"margin must be one number per pair, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("margins must be finite")
    n = len(m)
    yy, w = check_labels_and_weights(y, sample_weight, n)
    x = np.zeros((n, 0)) if features is None else np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape != (n, n_features):
        raise ValueError(f"expected features of shape ({n}, {n_features}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    return m, yy, w, x


def _scale(values: np.ndarray) -> float:
    s = float(np.std(values))
    return s if s > 1e-12 else 1.0


class TieModel(SavedEstimator):
    """Base class. ``fit(margin, y, sample_weight=None, features=None)``;
    ``predict_logits(margin, features=None)`` (log-probabilities (n, 3)).

    Subclasses define ``_param_names``, ``_initial(m, y, w, x)``, ``_log_proba(theta, m, x)`` and
    ``_nll_grad(theta, m, x, y, w) -> (value, grad)`` on standardised inputs, and ``_bounds``
    (which hold for the raw coefficients too, and are checked when a model is loaded).
    """

    kind = "tie-model"
    what = "tie model"
    registry: ClassVar[dict[str, type[SavedEstimator]]] = {}
    _state = {"coef_": Spec(ndim=1)}

    def __init__(self, position_bias: bool = True) -> None:
        self.position_bias = position_bias
        self.coef_: np.ndarray | None = None  # in the units of the raw margin and features
        self.n_iter_: int | None = None

    # -- to override
    def _param_names(self) -> list[str]:
        raise NotImplementedError

    def _initial(self, m, y, w, x) -> np.ndarray:
        raise NotImplementedError

    def _log_proba(self, theta, m, x) -> np.ndarray:
        raise NotImplementedError

    def _nll_grad(self, theta, m, x, y, w) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def _bounds(self) -> list[tuple[float | None, float | None]]:
        return [(None, None)] * len(self._param_names())

    def _to_raw(self, theta: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Map parameters fitted on standardised inputs back to raw units."""
        raise NotImplementedError

    def _from_raw(self, coef: np.ndarray, scales: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_features(self) -> int:
        return 0

    # -- public
    @property
    def params_(self) -> dict[str, float]:
        """Fitted parameters by name, in raw margin units."""
        self._check_fitted()
        return dict(zip(self._param_names(), map(float, self.coef_), strict=True))

    def _check_state(self) -> None:
        names = self._param_names()
        if self.coef_.shape != (len(names),):
            raise ValueError(f"coef_ needs {len(names)} values ({', '.join(names)}), got "
                             f"{len(self.coef_)}")
        for name, value, (lo, hi) in zip(names, self.coef_, self._bounds(), strict=True):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"{name} = {value:g} is outside [{lo}, {hi}]")

    def fit(self, margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            features: np.ndarray | None = None, init: np.ndarray | None = None) -> TieModel:
        """Maximum likelihood (L-BFGS-B with analytic gradients, on standardised inputs).

        ``init``: raw coefficients to start from (e.g. a reward model's trained tie parameter,
        with scale 1 and no position bias), clipped into the bounds."""
        m, y, w, x = _check(margin, y, sample_weight, features, self.n_features)
        if w.sum() <= 0:
            raise ValueError("sample weights sum to zero")
        counts = check_label_mix(y, f"the {self.name} tie model")
        if counts[TIE] == 0 and not self._tie_fixed():
            raise DataError(
                f"no ties among the labels: the {self.name} model cannot learn how often ties "
                "happen (its tie parameter would run to its bound)", column="label",
                fix="fix the tie share at equal rewards with --tie-rate R (rao-kupper or "
                    "davidson), or fit on data with ties")
        w = w / w.sum()
        scales = np.array([_scale(m), *[_scale(c) for c in x.T]])
        ms, xs = m / scales[0], x / scales[1:]
        theta0 = self._initial(ms, y, w, xs)
        if init is not None:
            lo = [-np.inf if b[0] is None else b[0] for b in self._bounds()]
            hi = [np.inf if b[1] is None else b[1] for b in self._bounds()]
            theta0 = np.clip(self._from_raw(np.asarray(init, dtype=np.float64), scales), lo, hi)
        res = self._minimise(theta0, (ms, xs, y, w), 0.0)
        mask = self._ridge_mask()
        if mask.any() and np.abs(res.x[mask]).max() > RUNAWAY:
            # the margin (or a feature) separates the labels (almost) perfectly: without a
            # penalty the coefficients would grow without bound
            res = self._minimise(theta0, (ms, xs, y, w), RIDGE)
            notice(f"the {self.name} tie model: the scores separate the labels almost "
                   f"perfectly; fitted with an L2 penalty ({RIDGE:g}) so its coefficients stay "
                   "finite")
        self.coef_ = self._to_raw(res.x, scales)
        self.n_iter_ = int(res.nit)
        return self

    def _minimise(self, theta0: np.ndarray, args: tuple, ridge: float):
        mask = self._ridge_mask().astype(np.float64)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self._nll_grad(theta, *args)
            return value + ridge * float((mask * theta ** 2).sum()), grad + 2 * ridge * mask * theta

        return minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=self._bounds(),
                        options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-15})

    def _ridge_mask(self) -> np.ndarray:
        """Parameters that run away on separable data (slopes, not the tie parameter)."""
        return np.ones(len(self._param_names()), dtype=bool)

    def _tie_fixed(self) -> bool:
        """True when the tie parameter is not learned from the labels (a fixed tie rate)."""
        return False

    def predict_logits(self, margin: np.ndarray, features: np.ndarray | None = None
                       ) -> np.ndarray:
        """Log-probabilities (n, 3): logits in prefpred's class order, ready for stacking."""
        self._check_fitted()
        m, _, _, x = _check(margin, features=features, n_features=self.n_features)
        return self._log_proba(self._from_raw(self.coef_, np.ones(1 + x.shape[1])), m, x)

    def nll(self, margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            features: np.ndarray | None = None) -> float:
        """Weighted mean negative log-likelihood (the fitted objective, unclipped)."""
        m, y, w, x = _check(margin, y, sample_weight, features, self.n_features)
        lp = self.predict_logits(m, x)[np.arange(len(m)), y]
        return float(-(w * lp).sum() / w.sum())

    def simulate(self, margin: np.ndarray, features: np.ndarray | None = None,
                 seed: int = 0) -> np.ndarray:
        """Labels drawn from the model's own probabilities (for checks and power studies)."""
        return sample_labels(self.predict_proba(margin, features), seed)

    def _free(self) -> np.ndarray:
        """Which parameters are fitted (False: fixed by an option, e.g. no position bias)."""
        return np.ones(len(self._param_names()), dtype=bool)

    def standard_errors(self, margin: np.ndarray, y: np.ndarray,
                        sample_weight: np.ndarray | None = None,
                        features: np.ndarray | None = None) -> dict[str, float]:
        """Asymptotic standard errors of the fitted parameters (inverse observed information).

        Sample weights count as frequencies (their sum is the number of observations). Fixed
        parameters get 0.
        """
        self._check_fitted()
        m, y, w, x = _check(margin, y, sample_weight, features, self.n_features)
        theta = self._from_raw(self.coef_, np.ones(1 + x.shape[1]))  # raw units: identity
        free = np.flatnonzero(self._free())
        hess = np.zeros((len(free), len(free)))
        for j, i in enumerate(free):
            h = 1e-5 * max(1.0, abs(theta[i]))
            up, down = theta.copy(), theta.copy()
            up[i] += h
            down[i] -= h
            diff = (self._nll_grad(up, m, x, y, w)[1] - self._nll_grad(down, m, x, y, w)[1])
            hess[:, j] = diff[free] / (2 * h)
        hess = (hess + hess.T) / 2
        se = np.zeros(len(theta))
        se[free] = np.sqrt(np.clip(np.diag(np.linalg.pinv(hess)), 0, None))
        return dict(zip(self._param_names(), map(float, se), strict=True))


class _MarginModel(TieModel):
    """Shared parts of Rao-Kupper and Davidson: theta = (s, b, tie parameter).

    ``tie_rate`` (optional) fixes the tie parameter instead of learning it: P(TIE) at equal
    rewards is then ``tie_rate`` (the explicit choice needed for labels without ties).
    """

    _tie_name: ClassVar[str] = ""

    def __init__(self, position_bias: bool = True, tie_rate: OpenFraction | None = None
                 ) -> None:
        super().__init__(position_bias)
        self.tie_rate = tie_rate

    def _param_names(self) -> list[str]:
        return ["scale", "position_bias", self._tie_name]

    def _bounds(self):
        tie = self._tie_bound()
        if self.tie_rate is not None:
            value = self._tie_value(self.tie_rate)
            tie = (value, value)
        return [(None, None), (None, None) if self.position_bias else (0.0, 0.0), tie]

    def _tie_bound(self) -> tuple[float | None, float | None]:
        return (None, None)

    def _tie_value(self, rate: float) -> float:
        """The tie parameter giving P(TIE) = ``rate`` at equal rewards."""
        raise NotImplementedError

    def _tie_fixed(self) -> bool:
        return self.tie_rate is not None

    def _ridge_mask(self) -> np.ndarray:
        return np.array([True, True, False])

    def _free(self) -> np.ndarray:
        return np.array([True, self.position_bias, self.tie_rate is None])

    def _initial(self, m, y, w, x):
        t = self.tie_rate if self.tie_rate is not None else self._tie_rate(y, w)
        return np.array([0.0, 0.0, self._tie_value(t)])

    def _to_raw(self, theta, scales):
        return np.array([theta[0] / scales[0], theta[1], theta[2]])

    def _from_raw(self, coef, scales):
        return np.array([coef[0] * scales[0], coef[1], coef[2]])

    @staticmethod
    def _tie_rate(y, w) -> float:
        return float(np.clip((w * (y == TIE)).sum(), 0.02, 0.9))


class RaoKupper(_MarginModel):
    """``P(A) = sigmoid(d - eta)``, ``P(B) = sigmoid(-d - eta)``, ``P(TIE) = 1 - P(A) - P(B)``."""

    name = "rao-kupper"
    _tie_name = "eta"

    def _tie_bound(self):
        return (_MIN_ETA, None)

    def _tie_value(self, rate: float) -> float:
        return float(max(np.log((1 + rate) / (1 - rate)), _MIN_ETA))

    @staticmethod
    def _parts(theta, m):
        s, b, eta = theta
        d = s * m + b
        a1, a2 = d - eta, -d - eta
        l_a, l_b = log_expit(a1), log_expit(a2)
        l1 = log_expit(-a1)  # log sigmoid(eta - d); P(TIE) = sigmoid(eta - d) - sigmoid(-eta - d)
        diff = np.minimum(l_b - l1, -1e-300)
        l_t = l1 + np.log(-np.expm1(diff))
        return d, a1, a2, l_a, l_b, l1, diff, l_t

    def _log_proba(self, theta, m, x):
        _, _, _, l_a, l_b, _, _, l_t = self._parts(theta, m)
        return np.stack([l_a, l_b, l_t], axis=1)

    def _nll_grad(self, theta, m, x, y, w):
        d, a1, a2, l_a, l_b, l1, diff, l_t = self._parts(theta, m)
        lp = np.stack([l_a, l_b, l_t], axis=1)
        sa1, sna1, sna2 = expit(a1), expit(-a1), expit(-a2)
        g = -1.0 / np.expm1(-diff)  # d log(1 - e^D) / dD
        dl1_dd, dl1_de = -sa1, sa1
        dl2_dd, dl2_de = -sna2, -sna2
        grad_d = np.stack([sna1, -sna2, dl1_dd + g * (dl2_dd - dl1_dd)], axis=1)
        grad_e = np.stack([-sna1, -sna2, dl1_de + g * (dl2_de - dl1_de)], axis=1)
        rows = np.arange(len(m))
        gd = -w * grad_d[rows, y]
        ge = -w * grad_e[rows, y]
        value = -(w * lp[rows, y]).sum()
        return float(value), np.array([(gd * m).sum(), gd.sum(), ge.sum()])


class Davidson(_MarginModel):
    """``softmax(d / 2, -d / 2, log nu)``: P(TIE) is largest (nu / (2 + nu)) at equal rewards."""

    name = "davidson"
    _tie_name = "log_nu"

    def _tie_value(self, rate: float) -> float:
        return float(np.log(2 * rate / (1 - rate)))

    @staticmethod
    def _logits(theta, m):
        s, b, log_nu = theta
        d = s * m + b
        return np.stack([d / 2, -d / 2, np.full_like(d, log_nu)], axis=1)

    def _log_proba(self, theta, m, x):
        return log_softmax(self._logits(theta, m))

    def _nll_grad(self, theta, m, x, y, w):
        lp = log_softmax(self._logits(theta, m))
        rows = np.arange(len(m))
        r = w[:, None] * (np.exp(lp) - np.eye(N_CLASSES)[y])  # d nll / d logits
        g_d = (r[:, A] - r[:, B]) / 2
        return float(-(w * lp[rows, y]).sum()), np.array([(g_d * m).sum(), g_d.sum(),
                                                          r[:, TIE].sum()])


class MultinomialTie(TieModel):
    """Multinomial logistic on ``(1, m, |m|, features...)``; TIE is the reference class.

    ``logit_A = w_A . phi``, ``logit_B = w_B . phi``, ``logit_TIE = 0``, so the odds of a tie
    against either win, ``exp(-w . phi)``, may depend on ``|m|`` and on the features.
    ``position_bias=False`` ties the two intercepts together. ``l2`` penalises all but the
    intercepts (on standardised inputs; 0 gives the plain maximum likelihood).
    """

    name = "multinomial"

    def __init__(self, position_bias: bool = True, features: Sequence[str] = (),
                 abs_margin: bool = True, l2: NonNegative = 0.0) -> None:
        super().__init__(position_bias)
        if isinstance(features, str):
            raise ConfigError(f"features must be a list of column names, got {features!r}")
        self.features = list(features)
        self.abs_margin = abs_margin
        self.l2 = l2

    @property
    def n_features(self) -> int:
        return len(self.features)

    def _columns(self) -> list[str]:
        return ["intercept", "margin", *(["abs_margin"] if self.abs_margin else []),
                *self.features]

    def _param_names(self) -> list[str]:
        cols = self._columns()
        return [f"{cls}:{c}" for cls in CLASSES[:2] for c in cols]

    def _design(self, m, x) -> np.ndarray:
        parts = [np.ones_like(m), m, *([np.abs(m)] if self.abs_margin else []), *x.T]
        return np.stack(parts, axis=1)

    def _col_scales(self, scales) -> np.ndarray:
        return np.array([1.0, scales[0], *([scales[0]] if self.abs_margin else []), *scales[1:]])

    def _to_raw(self, theta, scales):
        k = len(self._columns())
        return (theta.reshape(2, k) / self._col_scales(scales)).ravel()

    def _from_raw(self, coef, scales):
        k = len(self._columns())
        return (coef.reshape(2, k) * self._col_scales(scales)).ravel()

    def _weights(self, theta) -> np.ndarray:
        k = len(self._columns())
        wmat = theta.reshape(2, k).copy()
        if not self.position_bias:
            wmat[1, 0] = wmat[0, 0]
        return wmat

    def _ridge_mask(self) -> np.ndarray:
        mask = np.ones((2, len(self._columns())), dtype=bool)
        mask[:, 0] = False  # intercepts
        return mask.ravel()

    def _free(self) -> np.ndarray:
        free = np.ones(2 * len(self._columns()), dtype=bool)
        free[len(self._columns())] = self.position_bias
        return free

    def _initial(self, m, y, w, x):
        k = len(self._columns())
        t = self._tie_rate_safe(y, w)
        theta = np.zeros((2, k))
        theta[:, 0] = np.log((1 - t) / 2 / t)
        return theta.ravel()

    @staticmethod
    def _tie_rate_safe(y, w) -> float:
        return float(np.clip((w * (y == TIE)).sum(), 0.02, 0.9))

    def _logits(self, theta, m, x):
        phi = self._design(m, x)
        wmat = self._weights(theta)
        return np.column_stack([phi @ wmat[0], phi @ wmat[1], np.zeros(len(m))]), phi

    def _log_proba(self, theta, m, x):
        return log_softmax(self._logits(theta, m, x)[0])

    def _nll_grad(self, theta, m, x, y, w):
        z, phi = self._logits(theta, m, x)
        lp = log_softmax(z)
        rows = np.arange(len(m))
        r = w[:, None] * (np.exp(lp) - np.eye(N_CLASSES)[y])
        grad = np.stack([phi.T @ r[:, A], phi.T @ r[:, B]])
        if not self.position_bias:  # both intercepts are the first one
            grad[0, 0] += grad[1, 0]
            grad[1, 0] = 0.0
        wmat = self._weights(theta)
        pen = self.l2 * (wmat[:, 1:] ** 2).sum()
        grad[:, 1:] += 2 * self.l2 * wmat[:, 1:]
        return float(-(w * lp[rows, y]).sum() + pen), grad.ravel()

    def _check_state(self) -> None:
        super()._check_state()
        k = len(self._columns())
        if not self.position_bias and self.coef_[k] != self.coef_[0]:
            raise ValueError("without a position bias both intercepts must be equal")

    def fit(self, margin, y, sample_weight=None, features=None) -> MultinomialTie:
        super().fit(margin, y, sample_weight, features)
        if not self.position_bias:
            k = len(self._columns())
            self.coef_[k] = self.coef_[0]
        return self


TIE_MODELS = TieModel.registry


def make_tie_model(name: str, **params: Any) -> TieModel:
    return TieModel.create(name, **params)


def load_tie_model(path: str | Path) -> TieModel:
    """Read and validate a tie model written by :meth:`TieModel.save`."""
    return TieModel.load(path)


# --------------------------------------------------------------------------- comparison
def uncalibrated_logits(margin: np.ndarray) -> np.ndarray:
    """The raw margin read as Bradley-Terry logits with the tie logit at 0:
    ``softmax(m / 2, -m / 2, 0)`` (Davidson with s = 1, b = 0, nu = 1), the baseline a tie-aware
    model has to beat."""
    m = np.asarray(margin, dtype=np.float64)
    return log_softmax(np.stack([m / 2, -m / 2, np.zeros_like(m)], axis=1))


def reward_folds(y: np.ndarray, groups: np.ndarray | None = None, n_folds: int = 5,
                 seed: int = 0) -> np.ndarray:
    """Fold ids for comparing tie models: stratified by label, grouped when groups are given."""
    y = np.asarray(y)
    if n_folds < 2:
        raise ConfigError(f"need at least 2 folds, got {n_folds}")
    if len(y) < 2 * n_folds:
        raise DataError(f"only {len(y)} labelled pairs for {n_folds} folds")
    if groups is not None and len(np.unique(groups)) < n_folds:
        raise DataError(f"only {len(np.unique(groups))} distinct groups for {n_folds} folds",
                        column="group", fix="use fewer --folds or drop the 'group' column")
    return split_folds(y, groups, n_folds, seed)


def oof_tie_logits(name: str, margin: np.ndarray, y: np.ndarray, folds: np.ndarray, *,
                   features: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
                   params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Out-of-fold log-probabilities of one tie model (fit on the other folds, predict this).

    ``features`` are the values (n, p) of the columns that ``params["features"]`` names.
    """
    m, y, w, _ = _check(margin, y, sample_weight)
    x = None if features is None else np.asarray(features, dtype=np.float64).reshape(len(m), -1)

    def fit_predict(_k: int, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        model = make_tie_model(name, **dict(params or {}))
        model.fit(m[train], y[train], w[train], None if x is None else x[train])
        return model.predict_logits(m[held], None if x is None else x[held])

    return out_of_fold(folds, fit_predict)


def tie_model_params(name: str, *, position_bias: bool = True,
                     feature_names: Sequence[str] = (), tie_rate: float | None = None
                     ) -> dict[str, Any]:
    """The parameters of tie model ``name`` for the shared options: the feature columns go to
    the multinomial model only, a fixed tie rate to the margin models only."""
    params: dict[str, Any] = {"position_bias": position_bias}
    if name == MultinomialTie.name:
        if tie_rate is not None:
            raise ConfigError("the multinomial model learns its tie odds; a fixed --tie-rate "
                              "needs rao-kupper or davidson")
        if len(feature_names):
            params["features"] = list(feature_names)
    elif tie_rate is not None:
        params["tie_rate"] = tie_rate
    return params


def oof_tie_scores(margin: np.ndarray, y: np.ndarray, folds: np.ndarray, *,
                   models: Sequence[str] = tuple(TIE_MODELS),
                   features: np.ndarray | None = None, feature_names: Sequence[str] = (),
                   position_bias: bool = True, sample_weight: np.ndarray | None = None,
                   tie_rate: float | None = None) -> dict[str, dict[str, Any]]:
    """Out-of-fold log loss of the uncalibrated margin, the class prior and each tie model.

    Returns ``{name: {"log_loss": float, "logits": (n, 3) out-of-fold log-probabilities}}``;
    features are passed to the multinomial model only.
    """
    m, y, w, _ = _check(margin, y, sample_weight)
    results: dict[str, dict[str, Any]] = {}

    def add(name: str, logits: np.ndarray) -> None:
        results[name] = {"log_loss": log_loss(y, softmax(logits)), "logits": logits}

    add("uncalibrated", uncalibrated_logits(m))

    def prior(_k: int, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        counts = np.bincount(y[train], weights=w[train], minlength=N_CLASSES) + 1.0
        return np.tile(np.log(counts / counts.sum()), (len(held), 1))

    add("prior", out_of_fold(folds, prior))
    for name in models:
        params = tie_model_params(name, position_bias=position_bias,
                                  feature_names=feature_names, tie_rate=tie_rate)
        feats = features if "features" in params else None
        add(name, oof_tie_logits(name, m, y, folds, features=feats, sample_weight=w,
                                 params=params))
    return results
