"""Scores of three-class probability forecasts: log loss, accuracy, Brier, per-class ECE."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.metrics import log_loss as sk_log_loss

from prefpred.labels import CLASSES, N_CLASSES
from prefpred.targets import renormalise

#: The per-class ECE columns of a scores frame (beside the mean, ``ece``).
ECE_CLASS_COLUMNS = [f"ece_{name}" for name in CLASSES]


def log_loss(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Multi-class log loss exactly as ``sklearn.metrics.log_loss`` computes it (what graders use)."""
    return float(sk_log_loss(np.asarray(y), np.asarray(proba, dtype=np.float64),
                             labels=list(range(N_CLASSES)), sample_weight=sample_weight))


def accuracy(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    correct = (np.asarray(proba).argmax(1) == np.asarray(y)).astype(np.float64)
    return float(np.average(correct, weights=sample_weight))


def brier(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label."""
    onehot = np.eye(N_CLASSES)[np.asarray(y)]
    return float(np.average(((np.asarray(proba) - onehot) ** 2).sum(1), weights=sample_weight))


def ece_per_class(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Expected calibration error of each class's one-vs-rest forecast, equal-width bins.

    For class k: rows are binned by p_k into ``n_bins`` equal bins on [0, 1]; ECE_k is the
    row-weighted mean of |mean(p_k) - frequency(y == k)| over the bins.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    out = np.zeros(N_CLASSES)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for k in range(N_CLASSES):
        p = proba[:, k]
        hit = (y == k).astype(np.float64)
        bins = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
        count = np.bincount(bins, minlength=n_bins)
        sum_p = np.bincount(bins, weights=p, minlength=n_bins)
        sum_hit = np.bincount(bins, weights=hit, minlength=n_bins)
        used = count > 0
        gap = np.abs(sum_p[used] - sum_hit[used])  # = count * |mean p - freq|
        out[k] = gap.sum() / len(p)
    return out


def score(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None, *,
          allowed: np.ndarray | None = None, soft: np.ndarray | None = None) -> dict[str, float]:
    """All headline metrics of one forecast (unweighted unless ``sample_weight`` is given).

    ``allowed`` (n, 3) bool: rows judged without a tie option are scored on the forecast
    restricted to A and B and renormalised (P(A) / (P(A) + P(B))). ``soft`` (n, 3), NaN rows
    where absent: adds ``ce_soft``, the cross-entropy against those target distributions (vote
    shares), over the rows that have one.
    """
    proba = renormalise(proba, allowed)
    ece = ece_per_class(y, proba)
    out = {
        "rows": float(len(y)),
        "log_loss": log_loss(y, proba, sample_weight),
        "accuracy": accuracy(y, proba, sample_weight),
        "brier": brier(y, proba, sample_weight),
        "ece": float(ece.mean()),
    }
    for column, value in zip(ECE_CLASS_COLUMNS, ece, strict=True):
        out[column] = float(value)
    if soft is not None:
        out["ce_soft"] = soft_cross_entropy(soft, proba)
    return out


def soft_cross_entropy(soft: np.ndarray, proba: np.ndarray) -> float:
    """Mean of -sum_c t_c log p_c over rows with a target (rows of NaN are skipped); NaN when
    no row has one. Probabilities are clipped as sklearn's log loss clips them."""
    soft = np.asarray(soft, dtype=np.float64)
    has = ~np.isnan(soft).any(1)
    if not has.any():
        return float("nan")
    p = np.clip(np.asarray(proba, dtype=np.float64)[has], np.finfo(np.float64).eps, 1.0)
    return float(-(soft[has] * np.log(p)).sum(1).mean())


def score_by(y: np.ndarray, proba: np.ndarray, keys: Sequence[str], *, overall: str = "ALL",
             allowed: np.ndarray | None = None, soft: np.ndarray | None = None) -> pl.DataFrame:
    """One row of :func:`score` per key value (e.g. per source), then an overall row."""
    keys = np.asarray(keys)
    y, proba = np.asarray(y), np.asarray(proba)
    rows = []

    def part(m):
        return {"allowed": None if allowed is None else allowed[m],
                "soft": None if soft is None else soft[m]}

    for key in sorted(set(keys.tolist())):
        m = keys == key
        rows.append({"group": key, **score(y[m], proba[m], **part(m))})
    rows.append({"group": overall, **score(y, proba, **part(slice(None)))})
    return pl.DataFrame(rows).with_columns(pl.col("rows").cast(pl.Int64))


def table_scoring(table) -> dict[str, np.ndarray | None]:
    """``allowed`` / ``soft`` keyword arguments of :func:`score_by` for a table's rows: the
    classes each judgment offered (None when every row offered a tie) and the distribution to
    score ``ce_soft`` against: the vote shares of rows with several votes, and the
    ``soft_label`` of rows that have one but no votes behind it (a rebuilt label, e.g. a
    Dawid-Skene posterior, is not scored against itself); None when no row has either, so
    scores keep their usual columns."""
    from prefpred.data.votes import vote_counts

    allowed = None if table.tie_allowed().all() else table.allowed_classes()
    counts = vote_counts(table)
    soft = table.soft_label_rows()  # a soft label given as data (no votes behind it) ...
    soft[counts.sum(1) > 0] = np.nan
    several = counts.sum(1) > 1
    soft[several] = counts[several] / counts[several].sum(1, keepdims=True)
    return {"allowed": allowed, "soft": None if np.isnan(soft).all() else soft}


def format_scores(table: pl.DataFrame, title: str | None = None) -> str:
    """Render a scores frame as a fixed-width text table (used by the CLI and reports)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in table.columns:
        t.add_column(col, justify="left" if table[col].dtype == pl.String else "right")
    for row in table.iter_rows():
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(t)
    return console.export_text()
