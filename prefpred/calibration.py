"""Calibrators fitted on out-of-fold logits, their out-of-fold scores, and reliability diagrams.

Every calibrator maps logits (n, 3) in class order (A, B, TIE) to calibrated logits (log-
probabilities; :func:`prefpred.metrics.softmax` of them gives the probabilities):

- ``temperature``: ``z / T``, one parameter, fitted by a safeguarded Newton search on the convex
  1-D log loss in the inverse temperature ``1 / T``.
- ``vector``: ``a * log_softmax(z) + b``, a scale and a bias per class (L-BFGS, convex).
- ``temperature_by_length``: one temperature per length bin (quantile bins of a per-row length,
  e.g. :func:`pair_lengths` of the table), for models whose confidence drifts with length.
- ``none``: the identity (the uncalibrated softmax).

Calibrators are fitted on out-of-fold output only. :func:`calibrate_out_of_fold` estimates the
calibrated score itself out of fold (fit on the other CV folds, apply to this one), using the fold
ids that :func:`prefpred.cv.run_cv` saves in ``oof.parquet``, so a reported gain is honest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.optimize import minimize

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.io import atomic_path, write_json_atomic
from prefpred.labels import CLASSES, LOGIT_COLUMNS, N_CLASSES, check_labels_and_weights
from prefpred.metrics import ece_per_class, score_by, softmax
from prefpred.models.base import log_softmax
from prefpred.registry import instantiate, read_artifact

FORMAT_VERSION = 1


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
    return z, yy, w


def weighted_nll(logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
                 ) -> float:
    """Weighted mean negative log-likelihood of labels under softmax(logits) (no clipping)."""
    z, y, w = _check_inputs(logits, y, sample_weight)
    lp = log_softmax(z)[np.arange(len(z)), y]
    return float(-(w * lp).sum() / w.sum())


def fit_inverse_temperature(logits: np.ndarray, y: np.ndarray,
                            sample_weight: np.ndarray | None = None, *, tol: float = 1e-10,
                            max_beta: float = 1e4) -> float:
    """The ``beta = 1 / T`` that minimises the log loss of ``softmax(beta * logits)``.

    The loss is convex in beta (its second derivative is the weighted variance of the logit
    under the forecast), so the minimiser is the root of the increasing first derivative: a
    bracket ``[0, hi]`` is grown until the derivative turns positive, then Newton steps are taken
    inside the bracket, falling back to bisection when a step would leave it.
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
    lo, hi = 0.0, 1.0
    while derivatives(hi)[0] < 0:
        lo, hi = hi, hi * 2.0
        if hi > max_beta:
            return max_beta  # separable data: the loss keeps falling as beta grows
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


def pair_lengths(table: PreferenceTable) -> np.ndarray:
    """Total characters of prompt and both responses, all turns, per row (a length-bin key)."""
    total = sum(pl.col(c).list.join("").str.len_chars().cast(pl.Int64)
                for c in ("prompt", "response_a", "response_b"))
    return table.df.select(total.alias("n"))["n"].to_numpy().astype(np.float64)


# --------------------------------------------------------------------------- calibrators
class Calibrator:
    """Base class: ``fit(logits, y, sample_weight=None, lengths=None)``, ``transform(logits)``.

    ``transform`` returns calibrated logits (log-probabilities). Subclasses set ``method``,
    store fitted state in attributes ending in ``_`` and list them in ``_state``.
    """

    method: ClassVar[str] = ""
    needs_lengths: ClassVar[bool] = False
    _state: ClassVar[tuple[str, ...]] = ()

    def get_params(self) -> dict[str, Any]:
        return {}

    def fit(self, logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            *, lengths: np.ndarray | None = None) -> Calibrator:
        raise NotImplementedError

    def transform(self, logits: np.ndarray, *, lengths: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, logits: np.ndarray, *, lengths: np.ndarray | None = None) -> np.ndarray:
        return softmax(self.transform(logits, lengths=lengths))

    def fit_transform(self, logits: np.ndarray, y: np.ndarray,
                      sample_weight: np.ndarray | None = None, *,
                      lengths: np.ndarray | None = None) -> np.ndarray:
        return self.fit(logits, y, sample_weight, lengths=lengths).transform(logits, lengths=lengths)

    # -- persistence
    def _check_fitted(self) -> None:
        for name in self._state:
            if getattr(self, name, None) is None:
                raise RuntimeError(f"{type(self).__name__} is not fitted")

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        state = {}
        for name in self._state:
            value = getattr(self, name)
            state[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return {"kind": "calibrator", "format_version": FORMAT_VERSION, "method": self.method,
                "params": self.get_params(), "state": state}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        obj = cls(**data.get("params", {}))
        for name in cls._state:
            value = data["state"][name]
            setattr(obj, name, np.asarray(value, dtype=np.float64) if isinstance(value, list)
                    else value)
        return obj

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)

    def _lengths(self, lengths: np.ndarray | None, n: int) -> np.ndarray:
        if lengths is None:
            raise ValueError(f"the {self.method} calibrator needs per-row lengths "
                             "(e.g. prefpred.calibration.pair_lengths(table))")
        lengths = np.asarray(lengths, dtype=np.float64)
        if lengths.shape != (n,):
            raise ValueError(f"{len(lengths)} lengths for {n} rows")
        return lengths


class Identity(Calibrator):
    """No calibration: the model's own softmax (a baseline to compare against)."""

    method = "none"

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> Identity:
        _check_inputs(logits, y, sample_weight)
        return self

    def transform(self, logits, *, lengths=None) -> np.ndarray:
        return log_softmax(_check_inputs(logits)[0])


class TemperatureScaling(Calibrator):
    """``softmax(logits / T)`` with T fitted by maximum likelihood (``beta_ = 1 / T``)."""

    method = "temperature"
    _state = ("beta_",)

    def __init__(self) -> None:
        self.beta_: float | None = None

    @property
    def temperature_(self) -> float:
        self._check_fitted()
        return float("inf") if self.beta_ == 0 else 1.0 / self.beta_

    def fit(self, logits, y, sample_weight=None, *, lengths=None) -> TemperatureScaling:
        self.beta_ = fit_inverse_temperature(logits, y, sample_weight)
        return self

    def transform(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        return log_softmax(self.beta_ * _check_inputs(logits)[0])


class VectorScaling(Calibrator):
    """``a * log_softmax(logits) + b``: a scale and a bias per class, maximum likelihood.

    Acting on log-probabilities makes the result independent of a model's arbitrary per-row
    logit shift. ``l2`` (default tiny) pulls (a, b) towards (1, 0) so that the fit is unique even
    when a class's log-probability barely varies (e.g. the class prior).
    """

    method = "vector"
    _state = ("scale_", "bias_")

    def __init__(self, l2: float = 1e-6) -> None:
        self.l2 = l2
        self.scale_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        return {"l2": self.l2}

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
        self.scale_ = res.x[:N_CLASSES].copy()
        self.bias_ = res.x[N_CLASSES:] - res.x[N_CLASSES:].mean()  # softmax ignores a shift
        return self

    def transform(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        return log_softmax(self.scale_ * log_softmax(_check_inputs(logits)[0]) + self.bias_)


class TemperatureByLength(Calibrator):
    """One temperature per length bin; bins are quantiles of ``log1p(length)`` on the fit data.

    A bin with fewer than ``min_rows`` rows uses the temperature fitted on all rows.
    """

    method = "temperature_by_length"
    needs_lengths = True
    _state = ("edges_", "betas_", "global_beta_")

    def __init__(self, n_bins: int = 4, min_rows: int = 50) -> None:
        if n_bins < 1:
            raise ConfigError(f"n_bins must be at least 1, got {n_bins}")
        self.n_bins = n_bins
        self.min_rows = min_rows
        self.edges_: np.ndarray | None = None
        self.betas_: np.ndarray | None = None
        self.global_beta_: float | None = None

    def get_params(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "min_rows": self.min_rows}

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

    def transform(self, logits, *, lengths=None) -> np.ndarray:
        self._check_fitted()
        z = _check_inputs(logits)[0]
        beta = self.betas_[self._bins(self._lengths(lengths, len(z)))]
        return log_softmax(beta[:, None] * z)


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.method: c for c in (Identity, TemperatureScaling, VectorScaling, TemperatureByLength)
}


def make_calibrator(method: str, **params: Any) -> Calibrator:
    """A fresh calibrator by name (``none``, ``temperature``, ``vector``, ``temperature_by_length``)."""
    return instantiate(CALIBRATORS, method, "calibration method", params)


def load_calibrator(path: str | Path) -> Calibrator:
    """Read a calibrator written by :meth:`Calibrator.save`."""
    data = read_artifact(path, "calibrator", "calibrator")
    method = data.get("method")
    if method not in CALIBRATORS:
        raise DataError(f"unknown calibration method {method!r}", file=path, column="method")
    return CALIBRATORS[method].from_dict(data)


# --------------------------------------------------------------------------- out of fold
@dataclass
class OOFArrays:
    """The columns of an ``oof.parquet`` frame as arrays (row order kept)."""

    ids: list[str]
    y: np.ndarray
    folds: np.ndarray
    sources: np.ndarray
    logits: np.ndarray


def check_oof_frame(frame: pl.DataFrame, file: Path | None = None,
                    what: str = "an out-of-fold frame") -> pl.DataFrame:
    """Check an out-of-fold frame (columns, unique ids, finite logits, labels 0-2); return it
    with ``id`` as text. Errors name the file, row and column."""
    missing = [c for c in ("id", "fold", "label", *LOGIT_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing} of {what}", file=file, column=missing[0])
    frame = frame.with_columns(pl.col("id").cast(pl.String))
    repeat = ~frame["id"].is_first_distinct()
    if repeat.any():
        row = int(repeat.arg_true()[0]) + 1
        raise DataError(f"duplicate id {frame['id'][row - 1]!r}", file=file, row=row, column="id")
    for col in ("fold", "label", *LOGIT_COLUMNS):
        s = frame[col]
        bad = s.is_null()
        if s.dtype.is_float():
            bad = bad | ~s.is_finite()
        if bad.any():
            raise DataError("missing or non-finite value", file=file,
                            row=int(bad.arg_true()[0]) + 1, column=col)
    y = frame["label"].to_numpy().astype(np.int64)
    if ((y < 0) | (y >= N_CLASSES)).any():
        row = int(np.flatnonzero((y < 0) | (y >= N_CLASSES))[0]) + 1
        raise DataError(f"label {y[row - 1]} is not 0, 1 or 2", file=file, row=row, column="label")
    return frame


def oof_arrays(frame: pl.DataFrame | str | Path) -> OOFArrays:
    """Read an out-of-fold frame (id, source, fold, label, logit_A, logit_B, logit_TIE)."""
    file = None
    if not isinstance(frame, pl.DataFrame):
        file = Path(frame)
        if not file.exists():
            raise DataError("out-of-fold file not found", file=file)
        frame = pl.read_parquet(file)
    frame = check_oof_frame(frame, file)
    y = frame["label"].to_numpy().astype(np.int64)
    sources = (frame["source"].to_numpy() if "source" in frame.columns
               else np.full(frame.height, "all", dtype=object))
    return OOFArrays(ids=frame["id"].cast(pl.String).to_list(), y=y,
                     folds=frame["fold"].to_numpy().astype(np.int64), sources=sources,
                     logits=frame.select(LOGIT_COLUMNS).to_numpy().astype(np.float64))


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
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError("out-of-fold calibration needs at least two folds")
    name = method if isinstance(method, str) else method.method
    base_params = dict(params or {}) if isinstance(method, str) else method.get_params()
    out = np.empty_like(z)
    for k in fold_ids:
        test = folds == k
        cal = make_calibrator(name, **base_params)
        fit_len = lengths[~test] if lengths is not None else None
        cal.fit(z[~test], y[~test], w[~test], lengths=fit_len)
        out[test] = cal.transform(z[test], lengths=lengths[test] if lengths is not None else None)
    return out


def evaluate_calibration(
    logits: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    sources: Sequence[str] | np.ndarray | None = None,
    methods: Sequence[str] = ("none", "temperature", "vector", "temperature_by_length"),
    *,
    lengths: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> pl.DataFrame:
    """Out-of-fold scores (log loss, accuracy, Brier, ECE) per calibration method and source.

    Methods that need lengths are skipped when ``lengths`` is None.
    """
    overall_only = sources is None
    sources = np.full(len(y), "ALL") if sources is None else np.asarray(sources)
    frames = []
    for method in methods:
        if method not in CALIBRATORS:
            make_calibrator(method)  # raises a ConfigError naming the known methods
        if CALIBRATORS[method].needs_lengths and lengths is None:
            continue
        cal = calibrate_out_of_fold(logits, y, folds, method, lengths=lengths,
                                    sample_weight=sample_weight)
        scores = score_by(y, softmax(cal), sources)
        if overall_only:
            scores = scores.tail(1)
        frames.append(scores.with_columns(pl.lit(method).alias("calibration")))
    out = pl.concat(frames)
    return out.select("calibration", *[c for c in out.columns if c != "calibration"])


# --------------------------------------------------------------------------- reliability
def reliability_curve(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> pl.DataFrame:
    """Per class and equal-width bin of the forecast: rows, mean forecast, observed frequency.

    The bins are those of :func:`prefpred.metrics.ece_per_class`: a class's ECE is the
    row-weighted mean of ``|mean_proba - frequency|`` over its bins.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for k, name in enumerate(CLASSES):
        p = proba[:, k]
        bins = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
        count = np.bincount(bins, minlength=n_bins)
        sum_p = np.bincount(bins, weights=p, minlength=n_bins)
        hits = np.bincount(bins, weights=(y == k).astype(np.float64), minlength=n_bins)
        for b in np.flatnonzero(count):
            rows.append({"class": name, "bin": int(b), "lower": float(edges[b]),
                         "upper": float(edges[b + 1]), "rows": int(count[b]),
                         "mean_proba": float(sum_p[b] / count[b]),
                         "frequency": float(hits[b] / count[b])})
    return pl.DataFrame(rows, schema={"class": pl.String, "bin": pl.Int64, "lower": pl.Float64,
                                      "upper": pl.Float64, "rows": pl.Int64,
                                      "mean_proba": pl.Float64, "frequency": pl.Float64})


def plot_reliability(
    y: np.ndarray,
    forecasts: Mapping[str, np.ndarray] | np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    n_bins: int = 15,
) -> Path:
    """Reliability diagrams (one panel per class, one curve per forecast) written as a PNG.

    ``forecasts`` maps a label (e.g. ``"uncalibrated"``, ``"temperature"``) to probabilities
    (n, 3). The legend gives each curve's ECE (15 bins); bars under each panel show how many
    rows fall in each bin. Written atomically with matplotlib's Agg canvas (no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(forecasts, Mapping):
        forecasts = {"forecast": forecasts}
    fig = Figure(figsize=(4.2 * N_CLASSES, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, N_CLASSES, height_ratios=(3.2, 1), hspace=0.08)
    for k, name in enumerate(CLASSES):
        ax = fig.add_subplot(grid[0, k])
        hist = fig.add_subplot(grid[1, k], sharex=ax)
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for i, (label, proba) in enumerate(forecasts.items()):
            proba = np.asarray(proba, dtype=np.float64)
            curve = reliability_curve(y, proba, n_bins).filter(pl.col("class") == name)
            ece = ece_per_class(y, proba, n_bins)[k]
            color = f"C{i}"
            ax.plot(curve["mean_proba"], curve["frequency"], marker="o", ms=3, color=color,
                    label=f"{label} (ECE {ece:.3f})")
            width = 1.0 / n_bins
            hist.bar(curve["lower"] + width * (i + 0.5) / len(forecasts), curve["rows"],
                     width=width / len(forecasts), color=color, alpha=0.7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"P({name})")
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=7, loc="upper left")
        hist.set_xlabel("forecast probability")
        if k == 0:
            ax.set_ylabel("observed frequency")
            hist.set_ylabel("rows")
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
