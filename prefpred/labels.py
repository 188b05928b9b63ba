"""The one class order used everywhere, and label parsing."""

from __future__ import annotations

from typing import Final

import numpy as np

#: Class order of every logit, probability and label index in prefpred.
CLASSES: Final[tuple[str, str, str]] = ("A", "B", "TIE")
N_CLASSES: Final[int] = 3
A, B, TIE = 0, 1, 2
#: Names of the logit columns in out-of-fold and prediction frames, in class order.
LOGIT_COLUMNS: Final[list[str]] = [f"logit_{c}" for c in CLASSES]
#: Column permutation that maps a pair's classes onto its swapped pair's classes.
SWAP_PERMUTATION: Final[tuple[int, int, int]] = (B, A, TIE)

_LABEL_WORDS: Final[dict[str, int]] = {
    "a": A,
    "model_a": A,
    "winner_model_a": A,
    "b": B,
    "model_b": B,
    "winner_model_b": B,
    "tie": TIE,
    "winner_tie": TIE,
    "draw": TIE,
}


def parse_label(value: object) -> int:
    """Map ``A``/``B``/``tie`` (any case), ``model_a``/``model_b`` or ``0``/``1``/``2`` to an index.

    Raises ``ValueError`` with a short reason; adapters turn it into a located ``DataError``.
    """
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is not A/B/TIE or 0/1/2")
    if isinstance(value, (int, np.integer)):
        if int(value) in (A, B, TIE):
            return int(value)
        raise ValueError(f"label {value!r} is not 0, 1 or 2")
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            raise ValueError("label is missing (NaN)")
        if float(value).is_integer() and int(value) in (A, B, TIE):
            return int(value)
        raise ValueError(f"label {value!r} is not 0, 1 or 2")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _LABEL_WORDS:
            return _LABEL_WORDS[key]
        if key in ("0", "1", "2"):
            return int(key)
        raise ValueError(f"label {value!r} is not A, B, tie (or 0, 1, 2)")
    raise ValueError(f"label {value!r} is missing or of an unknown type")


def swap_class_columns(values: np.ndarray) -> np.ndarray:
    """Swap classes A and B in an array whose last axis is the class axis (logits, probabilities)."""
    values = np.asarray(values)
    if values.shape[-1] != N_CLASSES:
        raise ValueError(f"expected a last axis of size {N_CLASSES}, got shape {values.shape}")
    return values[..., list(SWAP_PERMUTATION)]


def swap_label_indices(labels: np.ndarray) -> np.ndarray:
    """Swap label indices A<->B (TIE stays); negative values (unlabelled) stay."""
    labels = np.asarray(labels)
    out = labels.copy()
    out[labels == A] = B
    out[labels == B] = A
    return out


def check_labels_and_weights(y: object, sample_weight: object, n: int
                             ) -> tuple[np.ndarray | None, np.ndarray]:
    """Validate optional class-index labels and optional sample weights for ``n`` rows.

    Returns ``(labels or None, weights)``; weights default to ones. Raises ``ValueError`` for a
    wrong length, an index outside 0 (A), 1 (B), 2 (TIE), or a negative / non-finite weight.
    """
    labels = None
    if y is not None:
        labels = np.asarray(y, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {n} rows")
        if ((labels < 0) | (labels >= N_CLASSES)).any():
            raise ValueError("labels must be class indices 0 (A), 1 (B) or 2 (TIE)")
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"sample_weight must be {n} finite non-negative numbers")
    return labels, w
