"""The one class order used everywhere, and every name derived from it.

Nothing else in the package spells a class name: logit columns, Kaggle's one-hot columns, the
label vocabulary of the readers and the swap permutation all come from :data:`CLASSES`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

#: Class order of every logit, probability and label index in prefpred.
CLASSES: Final[tuple[str, str, str]] = ("A", "B", "TIE")
N_CLASSES: Final[int] = len(CLASSES)
A, B, TIE = (CLASSES.index(c) for c in ("A", "B", "TIE"))
#: Names of the logit columns in out-of-fold and prediction frames, in class order.
LOGIT_COLUMNS: Final[list[str]] = [f"logit_{c}" for c in CLASSES]
#: Names of the probability columns of a prediction file, in class order.
PROBA_COLUMNS: Final[list[str]] = [f"prob_{c}" for c in CLASSES]
#: Kaggle's one-hot label / submission columns (LMSYS arena), in class order.
KAGGLE_COLUMNS: Final[tuple[str, ...]] = tuple(
    "winner_tie" if i == TIE else f"winner_model_{c.lower()}" for i, c in enumerate(CLASSES))
#: Column permutation that maps a pair's classes onto its swapped pair's classes.
SWAP_PERMUTATION: Final[tuple[int, int, int]] = (B, A, TIE)

#: The default label vocabulary of the readers: lower-case word -> class index. A file's own
#: words (a competition TOML's ``label_map``, a source's quirks) extend or replace it.
LABEL_WORDS: Final[dict[str, int]] = {
    **{c.lower(): i for i, c in enumerate(CLASSES)},
    **{str(i): i for i in range(N_CLASSES)},
    **{f"model_{c.lower()}": i for i, c in enumerate(CLASSES) if i != TIE},
    **{col: i for i, col in enumerate(KAGGLE_COLUMNS)},
    "draw": TIE,
}


def class_index(value: object) -> int:
    """A class given by index (0-2) or by name (any case) as its index; ``ValueError`` else."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
            and 0 <= int(value) < N_CLASSES:
        return int(value)
    if isinstance(value, str) and value.strip().upper() in CLASSES:
        return CLASSES.index(value.strip().upper())
    raise ValueError(f"{value!r} is not a class of {list(CLASSES)} (or its index)")


def swap_class_columns(values: np.ndarray) -> np.ndarray:
    """Swap classes A and B in an array whose last axis is the class axis (logits, probabilities)."""
    values = np.asarray(values)
    if values.shape[-1] != N_CLASSES:
        raise ValueError(f"expected a last axis of size {N_CLASSES}, got shape {values.shape}")
    return values[..., list(SWAP_PERMUTATION)]


def check_label_mix(y: np.ndarray, what: str) -> np.ndarray:
    """Class counts of labels ``y``; fewer than two classes present is a one-line
    :class:`~prefpred.errors.DataError` (there is nothing to learn from one class)."""
    from prefpred.errors import DataError

    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=N_CLASSES)
    present = [CLASSES[i] for i in np.flatnonzero(counts)]
    if len(present) < 2:
        raise DataError(f"{what}: every label is {present[0] if present else 'missing'}; "
                        "fitting needs at least two classes", column="label")
    return counts


def check_labels_and_weights(y: object, sample_weight: object, n: int
                             ) -> tuple[np.ndarray | None, np.ndarray]:
    """Validate optional class-index labels and optional sample weights for ``n`` rows.

    Returns ``(labels or None, weights)``; weights default to ones. Raises ``ValueError`` for a
    wrong length, an index outside the classes, or a negative / non-finite weight.
    """
    labels = None
    if y is not None:
        labels = np.asarray(y, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {n} rows")
        if ((labels < 0) | (labels >= N_CLASSES)).any():
            names = [f"{i} ({c})" for i, c in enumerate(CLASSES)]
            raise ValueError(f"labels must be class indices {', '.join(names[:-1])} or "
                             f"{names[-1]}")
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"sample_weight must be {n} finite non-negative numbers")
    return labels, w
