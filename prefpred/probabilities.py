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
