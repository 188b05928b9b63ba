"""Stacking and blending over the out-of-fold logits of several base models, then calibration.

Inputs are the ``oof.parquet`` frames that :func:`prefpred.cv.run_cv` writes (id, source, fold,
label, logit_A, logit_B, logit_TIE), joined by id; all must come from the same CV folds, so a
row's base-model logits were all predicted by models that never saw it. Optional extra features
(any numeric columns keyed by id, e.g. :func:`length_features`) can be given to the stackers.

- :class:`WeightBlend`: ``sum_m w_m * log_softmax(logits_m)`` with non-negative weights fitted on
  the out-of-fold log loss (a log-linear pool; the sum of the weights acts as an inverse
  temperature). Convex, few parameters: the simple alternative.
- :class:`LogisticStacker`: multinomial logistic regression on the base log-probabilities (and
  features), its ``C`` chosen by inner cross-validation.
- :class:`LGBMStacker`: a small LightGBM multiclass model, its number of rounds chosen by inner
  cross-validation with early stopping.

Nested cross-validation: :func:`stack_out_of_fold` fits the stacker (including its inner
hyper-parameter search over the remaining folds) on all folds but one and predicts that one, so
the stack's own score is out of fold; :func:`evaluate_stack` adds out-of-fold calibration on top
(:func:`prefpred.calibration.calibrate_out_of_fold`) and scores everything per source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.optimize import minimize

from prefpred.calibration import LOGIT_COLUMNS, calibrate_out_of_fold, check_oof_frame
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.io import write_json_atomic
from prefpred.labels import N_CLASSES
from prefpred.metrics import score_by, softmax
from prefpred.models.base import log_softmax
from prefpred.registry import constructor_params, instantiate, read_artifact

FORMAT_VERSION = 1


# --------------------------------------------------------------------------- inputs
@dataclass
class StackData:
    """Base-model out-of-fold logits joined by id, with labels, folds and optional features."""

    ids: list[str]
    y: np.ndarray
    folds: np.ndarray
    sources: np.ndarray
    logits: dict[str, np.ndarray]  # base model name -> (n, 3), same row order as ids
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    feature_names: list[str] = field(default_factory=list)
    sample_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.features.size == 0:
            self.features = np.zeros((len(self.ids), 0))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def models(self) -> list[str]:
        return list(self.logits)

    def take(self, mask: np.ndarray) -> StackData:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return StackData(
            ids=[self.ids[i] for i in idx], y=self.y[idx], folds=self.folds[idx],
            sources=self.sources[idx], logits={k: v[idx] for k, v in self.logits.items()},
            features=self.features[idx], feature_names=list(self.feature_names),
            sample_weight=None if self.sample_weight is None else self.sample_weight[idx])


def _read_frame(value: str | Path | pl.DataFrame) -> tuple[pl.DataFrame, Path | None]:
    if isinstance(value, pl.DataFrame):
        return value, None
    path = Path(value)
    if path.is_dir():
        path = path / "oof.parquet"
    if not path.exists():
        raise DataError("out-of-fold file not found", file=path,
                        fix="run `prefpred cv` for that model first")
    return pl.read_parquet(path), path


def load_stack_data(
    oofs: Mapping[str, str | Path | pl.DataFrame],
    features: pl.DataFrame | None = None,
    feature_columns: Sequence[str] | None = None,
    sample_weight: np.ndarray | None = None,
) -> StackData:
    """Join the out-of-fold frames of several base models (name -> frame, file or run folder).

    The first model's rows set the order. Every model must cover the same ids with the same
    labels and the same fold ids; ``features`` (a frame with ``id``) must cover them too.
    """
    if not oofs:
        raise ConfigError("stacking needs at least one base model's out-of-fold logits")
    names = list(oofs)
    base, base_file = _read_frame(oofs[names[0]])
    base = base.with_columns(pl.col("id").cast(pl.String))
    frames = {}
    for name in names:
        frame, file = _read_frame(oofs[name]) if name != names[0] else (base, base_file)
        frame = check_oof_frame(frame, file, f"the out-of-fold logits of {name!r}")
        frames[name] = (frame, file)
    ids = base["id"]
    joined = base.select("id", *(["source"] if "source" in base.columns else []), "fold", "label")
    logits = {}
    for name, (frame, file) in frames.items():
        renamed = frame.select(
            "id", pl.col("fold").alias("__fold"), pl.col("label").alias("__label"),
            *[pl.col(c).alias(f"__{c}") for c in LOGIT_COLUMNS])
        merged = joined.join(renamed, on="id", how="left", maintain_order="left")
        absent = merged["__fold"].is_null()
        if absent.any():
            raise DataError(f"id {ids[int(absent.arg_true()[0])]!r} of {names[0]!r} has no "
                            f"out-of-fold logits in {name!r}", file=file, column="id")
        if frame.height != base.height:
            extra = frame.filter(~pl.col("id").is_in(ids.implode()))["id"]
            raise DataError(f"id {extra[0]!r} is not among the ids of {names[0]!r}", file=file,
                            column="id")
        for col, what in (("fold", "fold ids (all base models must share the CV folds)"),
                          ("label", "labels")):
            differ = merged[col] != merged[f"__{col}"]
            if differ.any():
                i = int(differ.arg_true()[0])
                raise DataError(f"id {ids[i]!r}: {what} differ from {names[0]!r}'s "
                                f"({merged[f'__{col}'][i]} vs {merged[col][i]})", file=file,
                                column=col)
        logits[name] = merged.select([f"__{c}" for c in LOGIT_COLUMNS]).to_numpy().astype(float)
    x = np.zeros((base.height, 0))
    names_x: list[str] = []
    if features is not None:
        if "id" not in features.columns:
            raise DataError("the feature frame has no 'id' column", column="id")
        cols = list(feature_columns or [c for c in features.columns if c != "id"])
        missing = [c for c in cols if c not in features.columns]
        if missing:
            raise DataError(f"feature column(s) {missing} not found", column=missing[0])
        feat = joined.select("id").join(
            features.with_columns(pl.col("id").cast(pl.String)).select("id", *cols),
            on="id", how="left", maintain_order="left")
        for c in cols:
            s = feat[c].cast(pl.Float64, strict=False)
            bad = s.is_null() | ~s.is_finite()
            if bad.any():
                i = int(bad.arg_true()[0])
                raise DataError(f"feature missing or not a finite number for id {ids[i]!r}",
                                row=i + 1, column=c)
        x = feat.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()
        names_x = cols
    sources = (joined["source"].to_numpy() if "source" in joined.columns
               else np.full(base.height, "all", dtype=object))
    return StackData(ids=ids.to_list(), y=joined["label"].to_numpy().astype(np.int64),
                     folds=joined["fold"].to_numpy().astype(np.int64), sources=sources,
                     logits=logits, features=x, feature_names=names_x,
                     sample_weight=sample_weight)


def length_features(table: PreferenceTable) -> pl.DataFrame:
    """A few cheap pair features for a stacker: log lengths and their difference, turns."""
    def chars(col: str) -> pl.Expr:
        return pl.col(col).list.join("").str.len_chars().cast(pl.Float64).log1p()

    return table.df.select(
        "id",
        chars("prompt").alias("log_len_prompt"),
        chars("response_a").alias("log_len_a"),
        chars("response_b").alias("log_len_b"),
        (chars("response_a") - chars("response_b")).alias("log_len_diff"),
        pl.col("prompt").list.len().cast(pl.Float64).alias("turns"),
    )


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


# --------------------------------------------------------------------------- stackers
class Stacker:
    """``fit(logits: {model: (n, 3)}, y, features=None, sample_weight=None, folds=None)``;
    ``predict_logits(logits, features=None)``. ``folds`` (the CV fold ids of the training rows)
    drive the inner hyper-parameter search."""

    name: ClassVar[str] = ""
    uses_features: ClassVar[bool] = True

    def __init__(self) -> None:
        self.models_: list[str] | None = None
        self.feature_names_: list[str] = []

    def get_params(self) -> dict[str, Any]:
        return {}

    def fit(self, logits: Mapping[str, np.ndarray], y: np.ndarray,
            features: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            folds: np.ndarray | None = None, feature_names: Sequence[str] = ()) -> Stacker:
        raise NotImplementedError

    def predict_logits(self, logits: Mapping[str, np.ndarray],
                       features: np.ndarray | pl.DataFrame | None = None) -> np.ndarray:
        """Stacked logits (n, 3) from each base model's logits on the same rows; ``features``
        as an array in the fitted column order, or a frame holding the fitted columns (e.g.
        :func:`length_features` of the test table)."""
        raise NotImplementedError

    def _feature_values(self, features: np.ndarray | pl.DataFrame | None) -> np.ndarray | None:
        """Features as fitted: a frame is reduced to the fitted feature columns, in order."""
        if isinstance(features, pl.DataFrame):
            missing = [c for c in self.feature_names_ if c not in features.columns]
            if missing:
                raise DataError(f"feature column(s) {missing} missing", column=missing[0])
            return features.select(self.feature_names_).to_numpy().astype(np.float64)
        return features

    def fit_data(self, data: StackData) -> Stacker:
        return self.fit(data.logits, data.y, data.features, data.sample_weight, data.folds,
                        data.feature_names)

    def predict_data(self, data: StackData) -> np.ndarray:
        return self.predict_logits(data.logits, data.features)

    def _check_fitted(self) -> None:
        if self.models_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")

    def _design(self, logits: Mapping[str, np.ndarray],
                features: np.ndarray | pl.DataFrame | None, n_columns: int) -> np.ndarray:
        """The design matrix of new rows, checked against the ``n_columns`` it was fitted on."""
        x = design_matrix(logits, self.models_, self._feature_values(features))
        if x.shape[1] != n_columns:
            raise ConfigError(f"the stacker was fitted on {n_columns} columns, got "
                              f"{x.shape[1]} (features {self.feature_names_})")
        return x

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"kind": "stacker", "format_version": FORMAT_VERSION, "stacker": self.name,
                "params": self.get_params(), "models": self.models_,
                "feature_names": self.feature_names_, "state": self._state()}

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)


def _one_blas_thread():
    """Small matrices: BLAS threads only contend with each other (and with other processes)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _weights(y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return w / w.sum()


class WeightBlend(Stacker):
    """``sum_m w_m * log_softmax(logits_m)``, ``w_m >= 0``, fitted on the log loss (convex)."""

    name = "blend"
    uses_features = False

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

    def _state(self):
        return {"weights": self.weights_.tolist()}

    def _load_state(self, state):
        self.weights_ = np.asarray(state["weights"], dtype=np.float64)


def _inner_splits(folds: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if folds is None:
        return []
    folds = np.asarray(folds)
    return [(folds != k, folds == k) for k in np.unique(folds)] if len(np.unique(folds)) > 1 \
        else []


class LogisticStacker(Stacker):
    """Multinomial logistic regression on standardised base log-probabilities (+ features).

    With several ``Cs`` and fold ids, ``C`` is the one with the lowest inner out-of-fold log
    loss; otherwise ``Cs[0]``.
    """

    name = "logistic"

    def __init__(self, Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0)) -> None:
        super().__init__()
        self.Cs = [float(c) for c in Cs]
        self.C_: float | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        return {"Cs": self.Cs}

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
                    losses[i] -= (w[te] * pred[np.arange(te.sum()), y[te]]).sum()
            C = self.Cs[int(np.argmin(losses))]
        self.C_ = C
        self.coef_, self.intercept_ = self._split(self._fit_lr(xs, y, w, C), p)
        self.models_ = models
        self.feature_names_ = list(feature_names)
        return self

    def predict_logits(self, logits, features=None):
        self._check_fitted()
        x = self._design(logits, features, len(self.mean_))
        return log_softmax((x - self.mean_) / self.scale_ @ self.coef_.T + self.intercept_)

    def _state(self):
        return {k: np.asarray(getattr(self, f"{k}_")).tolist()
                for k in ("C", "mean", "scale", "coef", "intercept")}

    def _load_state(self, state):
        self.C_ = float(state["C"])
        for k in ("mean", "scale", "coef", "intercept"):
            setattr(self, f"{k}_", np.asarray(state[k], dtype=np.float64))


class LGBMStacker(Stacker):
    """A small LightGBM multiclass model on base log-probabilities (+ features).

    With fold ids, the number of rounds is the mean best iteration of inner early-stopped fits
    (one per held-out fold); otherwise ``n_estimators``.
    """

    name = "lgbm"

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.03,
                 num_leaves: int = 7, min_child_samples: int = 50, reg_lambda: float = 1.0,
                 early_stopping_rounds: int = 30, seed: int = 0, num_threads: int = 1) -> None:
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

    def get_params(self) -> dict[str, Any]:
        return constructor_params(self)

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
        self._check_fitted()
        x = self._design(logits, features, self.booster_.num_feature())
        return log_softmax(self.booster_.predict(x, raw_score=True))

    def feature_importance(self) -> dict[str, float]:
        """Total gain per input column (``<model>:logp_<class>`` and feature names)."""
        self._check_fitted()
        names = [f"{m}:logp_{c}" for m in self.models_ for c in ("A", "B", "TIE")]
        names += self.feature_names_
        gain = self.booster_.feature_importance(importance_type="gain")
        return dict(zip(names, map(float, gain), strict=True))

    def _state(self):
        return {"n_rounds": self.n_rounds_, "booster": self.booster_.model_to_string()}

    def _load_state(self, state):
        import lightgbm as lgb

        self.n_rounds_ = int(state["n_rounds"])
        self.booster_ = lgb.Booster(model_str=state["booster"])


STACKERS: dict[str, type[Stacker]] = {c.name: c for c in (WeightBlend, LogisticStacker,
                                                          LGBMStacker)}


def make_stacker(name: str, **params: Any) -> Stacker:
    return instantiate(STACKERS, name, "stacker", params)


def load_stacker(path: str | Path) -> Stacker:
    data = read_artifact(path, "stacker", "stacker")
    if data.get("stacker") not in STACKERS:
        raise DataError(f"unknown stacker {data.get('stacker')!r}", file=path, column="stacker")
    obj = make_stacker(data["stacker"], **data.get("params", {}))
    obj._load_state(data["state"])
    obj.models_ = list(data["models"])
    obj.feature_names_ = list(data.get("feature_names", []))
    return obj


# --------------------------------------------------------------------------- nested CV
def stack_out_of_fold(stacker: str | Callable[[], Stacker], data: StackData,
                      **params: Any) -> np.ndarray:
    """Out-of-fold logits of a stacker (nested CV): for each CV fold, fit on the other folds,
    with the inner hyper-parameter search over those folds only, and predict the held-out one."""
    make = (lambda: make_stacker(stacker, **params)) if isinstance(stacker, str) else stacker
    out = np.empty((len(data), N_CLASSES))
    fold_ids = np.unique(data.folds)
    if len(fold_ids) < 2:
        raise DataError("stacking out of fold needs at least two CV folds", column="fold")
    for k in fold_ids:
        test = data.folds == k
        model = make().fit_data(data.take(~test))
        out[test] = model.predict_data(data.take(test))
    return out


def fit_stacker(stacker: str, data: StackData, **params: Any) -> Stacker:
    """The stacker fitted on all rows (inner search over all CV folds), to apply at test time."""
    return make_stacker(stacker, **params).fit_data(data)


@dataclass
class StackReport:
    scores: pl.DataFrame  # name, calibration, group, rows, log_loss, accuracy, brier, ece...
    oof_logits: dict[str, np.ndarray]  # name -> uncalibrated out-of-fold logits


def evaluate_stack(
    data: StackData,
    *,
    stackers: Sequence[str] = ("blend", "logistic", "lgbm"),
    calibrations: Sequence[str] = ("temperature",),
    stacker_params: Mapping[str, Mapping[str, Any]] | None = None,
    lengths: np.ndarray | None = None,
    progress: bool = True,
) -> StackReport:
    """Out-of-fold scores of every base model, blend and stack, each raw (``none``) and with
    each calibration (the calibrator itself fitted out of fold), overall and per source.

    ``temperature_by_length`` needs ``lengths`` (e.g. :func:`prefpred.calibration.pair_lengths`
    of the table, in the row order of ``data``)."""
    from rich.progress import Progress

    oof: dict[str, np.ndarray] = {m: np.asarray(v, dtype=np.float64)
                                  for m, v in data.logits.items()}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("stacking", total=len(stackers))
        for name in stackers:
            params = dict((stacker_params or {}).get(name, {}))
            oof[f"stack:{name}" if name != "blend" else "blend"] = stack_out_of_fold(
                name, data, **params)
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
    return StackReport(scores=scores, oof_logits=oof)
