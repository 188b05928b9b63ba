"""Training targets: hard labels, soft labels (vote shares, teacher mixes, pseudo-labels) and
two-class rows, in one form every model reads.

A row's target is a distribution over the classes (A, B, TIE) and a set of *allowed* classes:
all three for an ordinary judgment, only A and B for a pair judged without a tie option
(``tie_allowed = False``). The likelihood of a row is the softmax restricted to its allowed
classes, so a two-class row "A beat B" is scored by P(A) / (P(A) + P(B)) and teaches nothing
about the tie rate. For one-hot targets with every class allowed this is ordinary
cross-entropy, and every model trains exactly as it did on hard labels.

Models read targets three ways:

- :func:`masked_cross_entropy` (loss and gradient on logits) for the logistic models;
- :func:`expand_rows` (each row once per class with a positive target, weighted by it) for
  learners that only take hard labels with weights (LightGBM, scikit-learn); exact for the
  expected log loss of three-class rows; two-class rows cannot be expressed this way;
- :func:`encode` (disallowed classes as -1 in one float array) for the backbone's tensors
  (:func:`prefpred.models.backbone.train.soft_target_loss` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefpred.data.table import PreferenceTable
from prefpred.labels import N_CLASSES, TIE

#: Stand-in for log(0) of a disallowed class: finite, so gradients stay finite.
MASKED = -1e30


@dataclass(frozen=True)
class Targets:
    """``probs`` (n, 3) target distributions, ``allowed`` (n, 3) bool, ``weight`` (n,)."""

    probs: np.ndarray
    allowed: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)

    @property
    def is_hard(self) -> bool:
        """One-hot targets with every class allowed: plain multiclass training."""
        return bool(self.allowed.all() and np.isin(self.probs, (0.0, 1.0)).all())

    @property
    def two_class(self) -> np.ndarray:
        return ~self.allowed[:, TIE]

    @classmethod
    def from_table(cls, table: PreferenceTable, *, soft: bool = True,
                   what: str = "training") -> Targets:
        """The table's soft labels where given (and ``soft``), else one-hot labels."""
        y = table.require_labels(what)
        probs = table.soft_labels() if soft else None
        if probs is None:
            probs = np.eye(N_CLASSES)[y]
        return cls(np.asarray(probs, dtype=np.float64), table.allowed_classes(),
                   table.weights())

    def smoothed(self, amount: float) -> Targets:
        """Label smoothing over each row's allowed classes."""
        if not amount:
            return self
        k = self.allowed.sum(1, keepdims=True)
        probs = np.where(self.allowed, (1 - amount) * self.probs + amount / k, 0.0)
        return Targets(probs, self.allowed, self.weight)


def masked_log_softmax(logits: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """log softmax over each row's allowed classes (``MASKED`` elsewhere)."""
    z = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        z = np.where(allowed, z, MASKED)
    z = z - z.max(1, keepdims=True)
    out = z - np.log(np.exp(z).sum(1, keepdims=True))
    return out if allowed is None else np.where(allowed, out, MASKED)


def renormalise(proba: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Probabilities restricted to each row's allowed classes and renormalised."""
    p = np.asarray(proba, dtype=np.float64)
    if allowed is None or allowed.all():
        return p
    p = np.where(allowed, p, 0.0)
    return p / p.sum(1, keepdims=True)


def masked_cross_entropy(logits: np.ndarray, targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    """Per-row cross-entropy of ``targets`` under the allowed-class softmax of ``logits``, and
    its gradient with respect to the logits (rows unweighted)."""
    logp = masked_log_softmax(logits, targets.allowed)
    t = np.where(targets.allowed, targets.probs, 0.0)
    loss = -(t * np.where(targets.allowed, logp, 0.0)).sum(1)
    q = np.where(targets.allowed, np.exp(logp), 0.0)
    grad = q * t.sum(1, keepdims=True) - t
    return loss, grad


def expand_rows(targets: Targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, class, weight) triples: each row once per class with a positive target,
    weighted by ``weight * target``. Weighted multiclass log loss over them equals the
    expected log loss of the soft targets. Two-class rows must be removed first."""
    if targets.two_class.any():
        raise ValueError("row expansion cannot express two-class rows")
    rows, classes = np.nonzero(targets.probs > 0)
    return rows, classes, targets.weight[rows] * targets.probs[rows, classes]


def encode(targets: Targets) -> np.ndarray:
    """One float array: the target where the class is allowed, -1 where it is not."""
    return np.where(targets.allowed, targets.probs, -1.0)


def teacher_mix(targets: Targets, teacher_logits: np.ndarray, alpha: float,
                temperature: float = 1.0) -> Targets:
    """``(1 - alpha) * targets + alpha * softmax(teacher_logits / temperature)``, the teacher
    restricted to each row's allowed classes (the distillation target)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    teacher = np.exp(masked_log_softmax(np.asarray(teacher_logits) / temperature,
                                        targets.allowed))
    teacher = np.where(targets.allowed, teacher, 0.0)
    probs = (1 - alpha) * targets.probs + alpha * teacher
    return Targets(probs / probs.sum(1, keepdims=True), targets.allowed, targets.weight)
