"""Stacking and blending over the out-of-fold logits of several base models, then calibration.

Inputs are base models' out-of-fold logits joined by id (:func:`prefpred.oof.join_oof`); all
must come from the same CV folds, so a row's base-model logits were all predicted by models that
never saw it. Optional extra features (any numeric columns keyed by id, e.g.
:func:`prefpred.features.lengths.length_features`) can be given to the stackers.

- :class:`WeightBlend`: ``sum_m w_m * log_softmax(logits_m)`` with non-negative weights fitted on
  the out-of-fold log loss (a log-linear pool; the sum of the weights acts as an inverse
  temperature). Convex, few parameters: the simple alternative.
- :class:`LogisticStacker`: multinomial logistic regression on the base log-probabilities (and
  features), its ``C`` chosen by inner cross-validation.
- :class:`LGBMStacker`: a small LightGBM multiclass model, its number of rounds chosen by inner
  cross-validation with early stopping.

Nested cross-validation: :func:`stack_out_of_fold` fits the stacker (including its inner
hyper-parameter search over the remaining folds) on all folds but one and predicts that one, so
the stack's own score is out of fold; :func:`evaluate` scores every base model, blend and stack,
each raw and with out-of-fold calibration on top (:func:`prefpred.calibration.calibrate_out_of_fold`),
per source. Stackers are saved and loaded through :class:`prefpred.saved.SavedEstimator`; a
stack's output is named by :func:`stack_label`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import polars as pl
from pydantic import Field
from scipy.optimize import minimize

from prefpred.calibration import calibrate_out_of_fold
from prefpred.data.folds import iter_folds, out_of_fold
from prefpred.errors import ConfigError, DataError
from prefpred.labels import CLASSES, N_CLASSES
from prefpred.metrics import score_by
from prefpred.oof import OOFData
from prefpred.probabilities import log_softmax, softmax
from prefpred.registry import NonNegative, Positive, PositiveFloat
from prefpred.saved import SavedEstimator, Spec

BLEND = "blend"


def stack_label(stacker: str) -> str:
    """The name a stacker's output goes by among base models: ``blend`` or ``stack:NAME``."""
    return BLEND if stacker == BLEND else f"stack:{stacker}"


def stacker_of(label: str) -> str | None:
    """The stacker behind a :func:`stack_label` (None for a base model's label)."""
    if label == BLEND:
        return BLEND
    return label.split(":", 1)[1] if label.startswith("stack:") else None


# --------------------------------------------------------------------------- stackers
def design_matrix(logits: Mapping[str, np.ndarray], models: Sequence[str],
                  features: np.ndarray | None = None) -> np.ndarray:
    """Base log-probabilities (3 columns per model, in ``models`` order), then the features."""
    missing = [m for m in models if m not in logits]
    if missing:
        raise ConfigError(f"logits of base model(s) {missing} are missing")
    parts = [log_softmax(np.asarray(logits[m], dtype=np.float64)) for m in models]
    if features is not None and np.asarray(features).size:
        parts.append(np.asarray(features, dtype=np.float64))
    return np.hstack(parts)


class Stacker(SavedEstimator):
    """``fit(logits: {model: (n, 3)}, y, features=None, sample_weight=None, folds=None)``;
    ``predict_logits(logits, features=None)``. ``folds`` (the CV fold ids of the training rows)
    drive the inner hyper-parameter search."""

    kind = "stacker"
    registry: ClassVar[dict[str, type[SavedEstimator]]] = {}
    uses_features: ClassVar[bool] = True
    _state = {"models_": Spec("texts"), "feature_names_": Spec("texts")}

    def __init__(self) -> None:
        self.models_: list[str] | None = None
        self.feature_names_: list[str] = []

    def fit(self, logits: Mapping[str, np.ndarray], y: np.ndarray,
            features: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            folds: np.ndarray | None = None, feature_names: Sequence[str] = ()) -> Stacker:
        raise NotImplementedError

    def predict_logits(self, logits: Mapping[str, np.ndarray],
                       features: np.ndarray | pl.DataFrame | None = None) -> np.ndarray:
        """Stacked logits (n, 3) from each base model's logits on the same rows; ``features``
        as an array in the fitted column order, or a frame holding the fitted columns (e.g.
        :func:`prefpred.features.lengths.length_features` of the test table)."""
        raise NotImplementedError

    @property
    def n_columns(self) -> int:
        """Width of the design matrix: 3 log-probabilities per base model, then the features."""
        return N_CLASSES * len(self.models_) + len(self.feature_names_)

    def _feature_values(self, features: np.ndarray | pl.DataFrame | None) -> np.ndarray | None:
        """Features as fitted: a frame is reduced to the fitted feature columns, in order."""
        if isinstance(features, pl.DataFrame):
            missing = [c for c in self.feature_names_ if c not in features.columns]
            if missing:
                raise DataError(f"feature column(s) {missing} missing", column=missing[0])
            return features.select(self.feature_names_).to_numpy().astype(np.float64)
        return features

    def fit_data(self, data: OOFData) -> Stacker:
        """Fit on out-of-fold data; soft targets (``data.soft``) by row expansion: each row once
        per class with a positive target, weighted by it (the expected log loss, exactly)."""
        if data.soft is None or np.isnan(data.soft).all():
            return self.fit(data.logits, data.y, data.features, data.sample_weight, data.folds,
                            data.feature_names)
        from prefpred.targets import Targets, expand_rows

        hard = np.isnan(data.soft).any(1)
        probs = np.where(hard[:, None], np.eye(N_CLASSES)[data.y], data.soft)
        weight = np.ones(len(data)) if data.sample_weight is None else data.sample_weight
        rows, classes, weights = expand_rows(Targets(probs, np.ones_like(probs, bool), weight))
        part = data.take(rows)
        return self.fit(part.logits, classes, part.features, weights, part.folds,
                        part.feature_names)

    def predict_data(self, data: OOFData) -> np.ndarray:
        return self.predict_logits(data.logits, data.features)

    def _design(self, logits: Mapping[str, np.ndarray],
                features: np.ndarray | pl.DataFrame | None) -> np.ndarray:
        """The design matrix of new rows, checked against the columns it was fitted on."""
        self._check_fitted()
        x = design_matrix(logits, self.models_, self._feature_values(features))
        if x.shape[1] != self.n_columns:
            raise ConfigError(f"the stacker was fitted on {self.n_columns} columns, got "
                              f"{x.shape[1]} (features {self.feature_names_})")
        return x


def _one_blas_thread():
    """Small matrices: BLAS threads only contend with each other (and with other processes)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _weights(y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return w / w.sum()


class WeightBlend(Stacker):
    """``sum_m w_m * log_softmax(logits_m)``, ``w_m >= 0``, fitted on the log loss (convex)."""

    name = BLEND
    uses_features = False
    _state = {**Stacker._state, "weights_": Spec(ndim=1, low=0.0)}

    def __init__(self) -> None:
        super().__init__()
        self.weights_: np.ndarray | None = None

    @property
    def normalised_weights_(self) -> dict[str, float]:
        self._check_fitted()
        total = self.weights_.sum()
        return {m: float(w / total) if total > 0 else 0.0
                for m, w in zip(self.models_, self.weights_, strict=True)}

    def fit(self, logits, y, features=None, sample_weight=None, folds=None, feature_names=()):
        models = list(logits)
        lp = np.stack([log_softmax(np.asarray(logits[m], dtype=np.float64)) for m in models])
        y = np.asarray(y)
        w = _weights(y, sample_weight)
        onehot = np.eye(N_CLASSES)[y]

        def loss(theta):
            z = np.tensordot(theta, lp, axes=1)
            out = log_softmax(z)
            r = w[:, None] * (np.exp(out) - onehot)
            return float(-(w * (out * onehot).sum(1)).sum()), (lp * r[None]).sum(axis=(1, 2))

        theta0 = np.full(len(models), 1.0 / len(models))
        with _one_blas_thread():
            res = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                           bounds=[(0.0, None)] * len(models),
                           options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-15})
        self.weights_ = res.x
        self.models_ = models
        return self

    def predict_logits(self, logits, features=None):
        self._check_fitted()
        lp = design_matrix(logits, self.models_).reshape(-1, len(self.models_), N_CLASSES)
        return log_softmax(np.einsum("m,nmk->nk", self.weights_, lp))

    def _check_state(self) -> None:
        if len(self.weights_) != len(self.models_):
            raise ValueError(f"{len(self.weights_)} weights for {len(self.models_)} models")


def _inner_splits(folds: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of each fold of an inner search (none with < 2 folds)."""
    if folds is None or len(np.unique(folds)) < 2:
        return []
    return [(train, held) for _, train, held in iter_folds(folds)]


class LogisticStacker(Stacker):
    """Multinomial logistic regression on standardised base log-probabilities (+ features).

    With several ``Cs`` and fold ids, ``C`` is the one with the lowest inner out-of-fold log
    loss; otherwise ``Cs[0]``.
    """

    name = "logistic"
    _state = {**Stacker._state, "C_": Spec(low=0.0, open_low=True), "mean_": Spec(ndim=1),
              "scale_": Spec(ndim=1, low=0.0, open_low=True), "coef_": Spec(ndim=2),
              "intercept_": Spec(ndim=1)}

    def __init__(self, Cs: Sequence[PositiveFloat] = (0.01, 0.1, 1.0, 10.0)) -> None:
        super().__init__()
        self.Cs = [float(c) for c in Cs]
        self.C_: float | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    @staticmethod
    def _fit_lr(x: np.ndarray, y: np.ndarray, w: np.ndarray, C: float,
                start: np.ndarray | None = None, tol: float = 1e-10) -> np.ndarray:
        """Multinomial logistic regression: weighted mean log loss plus ``|W|^2 / (2 C n)`` (the
        intercepts unpenalised; scikit-learn's objective up to a constant factor), fitted by
        damped Newton steps, which stay fast when the base models' columns are nearly collinear.

        Returns the coefficients (3 x p, row-major) followed by the 3 intercepts.
        """
        n, p = x.shape
        if len(np.unique(y)) < N_CLASSES:
            raise DataError("the stacker's training rows do not contain all three classes")
        w = w / w.sum()
        xt = np.hstack([x, np.ones((n, 1))])
        xt_t = np.ascontiguousarray(xt.T)
        pen = np.full(p + 1, 1.0 / (2.0 * C * n))
        pen[-1] = 0.0
        rows = np.arange(n)
        onehot = np.eye(N_CLASSES)[y]
        if start is None:
            wmat = np.zeros((N_CLASSES, p + 1))
        else:
            coef, icpt = start[:N_CLASSES * p].reshape(N_CLASSES, p), start[N_CLASSES * p:]
            wmat = np.hstack([coef, icpt[:, None]])

        def objective(wm: np.ndarray) -> tuple[float, np.ndarray]:
            lp = log_softmax(xt @ wm.T)
            return float(-(w * lp[rows, y]).sum() + (pen * wm ** 2).sum()), lp

        value, lp = objective(wmat)
        for _ in range(100):
            prob = np.exp(lp)
            grad = np.ascontiguousarray((w[:, None] * (prob - onehot)).T) @ xt + 2 * pen * wmat
            if np.abs(grad).max() < tol:
                break
            hess = np.empty((N_CLASSES, p + 1, N_CLASSES, p + 1))
            for k in range(N_CLASSES):
                for j in range(k, N_CLASSES):
                    s_kj = w * prob[:, k] * ((k == j) - prob[:, j])
                    block = (xt_t * s_kj) @ xt
                    hess[k, :, j, :] = block
                    hess[j, :, k, :] = block.T
            size = N_CLASSES * (p + 1)
            hess = hess.reshape(size, size) + np.diag(np.tile(2 * pen, N_CLASSES) + 1e-12)
            step = np.linalg.solve(hess, grad.ravel()).reshape(N_CLASSES, p + 1)
            slope = float((grad * step).sum())
            t = 1.0
            while True:
                new_value, new_lp = objective(wmat - t * step)
                if new_value <= value - 1e-4 * t * slope or t < 1e-8:
                    break
                t /= 2
            wmat = wmat - t * step
            done = value - new_value < 1e-15
            value, lp = new_value, new_lp
            if done:
                break
        return np.concatenate([wmat[:, :p].ravel(), wmat[:, p]])

    @staticmethod
    def _split(theta: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
        return theta[:N_CLASSES * p].reshape(N_CLASSES, p), theta[N_CLASSES * p:]

    def fit(self, logits, y, features=None, sample_weight=None, folds=None, feature_names=()):
        with _one_blas_thread():
            return self._fit(logits, y, features, sample_weight, folds, feature_names)

    def _fit(self, logits, y, features, sample_weight, folds, feature_names):
        models = list(logits)
        x = design_matrix(logits, models, features)
        y = np.asarray(y)
        w = _weights(y, sample_weight)
        self.mean_ = x.mean(0)
        self.scale_ = np.where(x.std(0) > 1e-12, x.std(0), 1.0)
        xs = (x - self.mean_) / self.scale_
        splits = _inner_splits(folds)
        C = self.Cs[0]
        p = xs.shape[1]
        if len(self.Cs) > 1 and splits:
            # strongest penalty first; each fit starts from the previous C's solution
            order = sorted(range(len(self.Cs)), key=lambda i: self.Cs[i])
            losses = np.zeros(len(self.Cs))
            for tr, te in splits:
                theta = None
                for i in order:
                    theta = self._fit_lr(xs[tr], y[tr], w[tr], self.Cs[i], theta)
                    coef, icpt = self._split(theta, p)
                    pred = log_softmax(xs[te] @ coef.T + icpt)
                    losses[i] -= (w[te] * pred[np.arange(len(te)), y[te]]).sum()
            C = self.Cs[int(np.argmin(losses))]
        self.C_ = C
        self.coef_, self.intercept_ = self._split(self._fit_lr(xs, y, w, C), p)
        self.models_ = models
        self.feature_names_ = list(feature_names)
        return self

    def predict_logits(self, logits, features=None):
        x = self._design(logits, features)
        return log_softmax((x - self.mean_) / self.scale_ @ self.coef_.T + self.intercept_)

    def _check_state(self) -> None:
        p = self.n_columns
        if (self.mean_.shape, self.scale_.shape, self.coef_.shape, self.intercept_.shape) != (
                (p,), (p,), (N_CLASSES, p), (N_CLASSES,)):
            raise ValueError(f"mean_, scale_, coef_ and intercept_ must have shapes ({p},), "
                             f"({p},), ({N_CLASSES}, {p}) and ({N_CLASSES},) for "
                             f"{len(self.models_)} models and {len(self.feature_names_)} features")


class LGBMStacker(Stacker):
    """A small LightGBM multiclass model on base log-probabilities (+ features).

    With fold ids, the number of rounds is the mean best iteration of inner early-stopped fits
    (one per held-out fold); otherwise ``n_estimators``.
    """

    name = "lgbm"
    _state = {**Stacker._state, "n_rounds_": Spec("integer", low=1), "booster_": Spec("text")}

    def __init__(self, n_estimators: Positive = 300, learning_rate: PositiveFloat = 0.03,
                 num_leaves: Annotated[int, Field(ge=2)] = 7, min_child_samples: Positive = 50,
                 reg_lambda: NonNegative = 1.0, early_stopping_rounds: Positive = 30,
                 seed: Annotated[int, Field(ge=0)] = 0, num_threads: Positive = 1) -> None:
        super().__init__()
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads
        self.booster_ = None
        self.n_rounds_: int | None = None

    def _lgb_params(self) -> dict[str, Any]:
        return {"objective": "multiclass", "num_class": N_CLASSES,
                "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_data_in_leaf": self.min_child_samples, "lambda_l2": self.reg_lambda,
                "seed": self.seed, "deterministic": True, "force_row_wise": True,
                "num_threads": self.num_threads, "verbosity": -1}

    def fit(self, logits, y, features=None, sample_weight=None, folds=None, feature_names=()):
        import lightgbm as lgb

        models = list(logits)
        x = design_matrix(logits, models, features)
        y = np.asarray(y)
        w = _weights(y, sample_weight) * len(y)
        rounds = self.n_estimators
        splits = _inner_splits(folds)
        if splits:
            best = []
            for tr, te in splits:
                booster = lgb.train(
                    self._lgb_params(), lgb.Dataset(x[tr], y[tr], weight=w[tr]),
                    num_boost_round=self.n_estimators,
                    valid_sets=[lgb.Dataset(x[te], y[te], weight=w[te])],
                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
                best.append(booster.best_iteration or self.n_estimators)
            rounds = max(1, int(round(float(np.mean(best)))))
        self.n_rounds_ = rounds
        self.booster_ = lgb.train(self._lgb_params(), lgb.Dataset(x, y, weight=w),
                                  num_boost_round=rounds)
        self.models_ = models
        self.feature_names_ = list(feature_names)
        return self

    def predict_logits(self, logits, features=None):
        x = self._design(logits, features)
        return log_softmax(self.booster_.predict(x, raw_score=True))

    def feature_importance(self) -> dict[str, float]:
        """Total gain per input column (``<model>:logp_<class>`` and feature names)."""
        self._check_fitted()
        names = [f"{m}:logp_{c}" for m in self.models_ for c in CLASSES]
        names += self.feature_names_
        gain = self.booster_.feature_importance(importance_type="gain")
        return dict(zip(names, map(float, gain), strict=True))

    def _dump(self, attr: str) -> Any:
        return self.booster_.model_to_string() if attr == "booster_" else super()._dump(attr)

    def _restore(self, attr: str, value: Any) -> None:
        if attr != "booster_":
            return super()._restore(attr, value)
        import lightgbm as lgb

        try:
            self.booster_ = lgb.Booster(model_str=value)
        except Exception as err:  # noqa: BLE001 - LightGBM's own error type for a bad model
            raise ValueError(f"booster_ is not a LightGBM model ({err})") from None

    def _check_state(self) -> None:
        if self.booster_.num_feature() != self.n_columns:
            raise ValueError(f"the booster has {self.booster_.num_feature()} features, the "
                             f"stacker {self.n_columns}")
        if self.booster_.num_model_per_iteration() != N_CLASSES:
            raise ValueError(f"the booster predicts {self.booster_.num_model_per_iteration()} "
                             f"classes, not {N_CLASSES}")


STACKERS = Stacker.registry


def make_stacker(name: str, **params: Any) -> Stacker:
    return Stacker.create(name, **params)


def load_stacker(path: str | Path) -> Stacker:
    """Read and validate a stacker written by :meth:`Stacker.save`."""
    return Stacker.load(path)


# --------------------------------------------------------------------------- nested CV
def stack_out_of_fold(stacker: str | Callable[[], Stacker], data: OOFData,
                      **params: Any) -> np.ndarray:
    """Out-of-fold logits of a stacker (nested CV): for each CV fold, fit on the other folds,
    with the inner hyper-parameter search over those folds only, and predict the held-out one."""
    make = (lambda: make_stacker(stacker, **params)) if isinstance(stacker, str) else stacker

    def fit_predict(_k: int, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        return make().fit_data(data.take(train)).predict_data(data.take(held))

    return out_of_fold(data.folds, fit_predict)


def fit_stacker(stacker: str, data: OOFData, **params: Any) -> Stacker:
    """The stacker fitted on all rows (inner search over all CV folds), to apply at test time."""
    return make_stacker(stacker, **params).fit_data(data)


@dataclass
class Evaluation:
    scores: pl.DataFrame  # model, calibration, group, rows, log_loss, accuracy, brier, ece...
    oof_logits: dict[str, np.ndarray]  # model or stack label -> uncalibrated out-of-fold logits


def evaluate(
    data: OOFData,
    *,
    stackers: Sequence[str] = (),
    calibrations: Sequence[str] = ("temperature",),
    stacker_params: Mapping[str, Mapping[str, Any]] | None = None,
    lengths: np.ndarray | None = None,
    progress: bool = True,
) -> Evaluation:
    """Out-of-fold scores of every base model of ``data`` and of each stacker (nested CV), each
    raw (``none``) and with each calibration (the calibrator itself fitted out of fold), per
    source and overall (group ``ALL``). Rows are labelled by :func:`stack_label`.

    ``temperature_by_length`` needs ``lengths`` (e.g.
    :func:`prefpred.features.lengths.pair_lengths`, in the row order of ``data``)."""
    from rich.progress import Progress

    from prefpred.calibration import make_calibrator

    for cal in calibrations:
        if make_calibrator(cal).needs_lengths and lengths is None:  # unknown names raise here
            raise ConfigError(f"the {cal} calibration needs pair lengths")
    oof: dict[str, np.ndarray] = {m: np.asarray(v, dtype=np.float64)
                                  for m, v in data.logits.items()}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("stacking", total=len(stackers))
        for name in stackers:
            params = dict((stacker_params or {}).get(name, {}))
            oof[stack_label(name)] = stack_out_of_fold(name, data, **params)
            bar.advance(task)
    frames = []
    for name, logits in oof.items():
        variants = [("none", logits)]
        for cal in calibrations:
            if cal != "none":
                variants.append((cal, calibrate_out_of_fold(
                    logits, data.y, data.folds, cal, lengths=lengths,
                    sample_weight=data.sample_weight)))
        for cal_name, z in variants:
            frames.append(score_by(data.y, softmax(z), data.sources).with_columns(
                pl.lit(name).alias("model"), pl.lit(cal_name).alias("calibration")))
    scores = pl.concat(frames)
    scores = scores.select("model", "calibration",
                           *[c for c in scores.columns if c not in ("model", "calibration")])
    return Evaluation(scores=scores, oof_logits=oof)
