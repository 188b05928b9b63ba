"""Logits to probabilities: softmax and log-softmax over the class axis (the last one).

Every model emits logits (n, 3) in the class order of :mod:`prefpred.labels`; calibrators and
stackers return log-probabilities, which are logits too. These two functions are the only way
from one to the other.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` along the last axis, computed stably (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (float64; each row sums to 1)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sample_labels(proba: np.ndarray, seed: int = 0) -> np.ndarray:
    """One class index per row drawn from its probabilities (simulations, power checks)."""
    proba = np.asarray(proba, dtype=np.float64)
    u = np.random.default_rng(seed).random(len(proba))
    return (u[:, None] > np.cumsum(proba, axis=1)).sum(1).clip(0, proba.shape[1] - 1)


#: Every probability prefpred writes is clipped to [PROBABILITY_FLOOR, 1] and renormalised, so
#: that no row holds an exact 0 or 1: a confident mistake then costs at most -ln(1e-6) = 13.8
#: in log loss (graders clip at 1e-15, where it would cost 34.5).
PROBABILITY_FLOOR = 1e-6


def finalise_probabilities(proba: np.ndarray, n_rows: int | None = None,
                           n_classes: int | None = None) -> np.ndarray:
    """Probabilities ready to write: a finite, non-negative (n, k) array whose rows have a
    positive sum, normalised, clipped to :data:`PROBABILITY_FLOOR` and normalised again, so
    every value is inside (0, 1) and every row sums to 1.

    Raises ``ValueError`` naming the first bad row (1-based): nothing non-finite is ever written.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or (n_rows is not None and p.shape[0] != n_rows) or \
            (n_classes is not None and p.shape[1] != n_classes):
        raise ValueError(f"probabilities of shape {p.shape}, expected ({n_rows}, {n_classes})")
    bad = ~np.isfinite(p).all(1) | (p < 0).any(1) | ~(p.sum(1) > 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {row + 1} has probabilities {p[row].tolist()}: not finite, "
                         "negative or all zero")
    p = p / p.sum(1, keepdims=True)
    p = np.maximum(p, PROBABILITY_FLOOR)
    return p / p.sum(1, keepdims=True)
