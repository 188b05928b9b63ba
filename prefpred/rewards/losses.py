"""Losses for training a scalar reward model on preference pairs, with or without ties.

A reward model scores each response alone; a pair's reward difference ``d = r_A - r_B`` is read
through a pairwise likelihood:

- ``bt`` (Bradley-Terry, what TRL's RewardTrainer and OpenRLHF train): ``P(A) = sigmoid(d)``;
  tie rows are dropped before training.
- ``davidson``: ``softmax(d / 2, -d / 2, log nu)``, with ``log nu`` learned with the rewards.
- ``rao-kupper``: ``P(A) = sigmoid(d - eta)``, ``P(B) = sigmoid(-d - eta)``, ``P(TIE)`` the
  rest, with ``eta > 0`` learned with the rewards.

The parameterisation is the one of :class:`prefpred.rewards.models.Davidson` and
:class:`~prefpred.rewards.models.RaoKupper` with scale 1 and no position bias, so a trained tie
parameter seeds ``prefpred calibrate-rewards fit --init-from``. Rows judged without a tie option
(``tie_allowed`` False) use ``P(A) / (P(A) + P(B))``.

Every loss is written as three-class logits (log-probabilities up to a constant) and trained
with the backbone's soft-target loss, so soft labels work unchanged: the tie logit of a
two-class row is :data:`NO_TIE`, whose probability is exactly 0 in float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

from prefpred.errors import ConfigError
from prefpred.labels import N_CLASSES, TIE

LOSSES = ("bt", "davidson", "rao-kupper")
#: The learned tie parameter of each tie-aware loss (the name the tie models use).
TIE_PARAMETER = {"davidson": "log_nu", "rao-kupper": "eta"}
#: The tie logit of a row without a tie outcome (``exp(-1e4)`` is 0 in float32 and float64).
NO_TIE = -1e4


def check_loss(name: str) -> str:
    from prefpred.schema import closest

    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}{closest(name, LOSSES)}; choose one of "
                          f"{list(LOSSES)}")
    return name


def tie_value(loss: str, rate: float) -> float:
    """The tie parameter giving P(TIE) = ``rate`` at equal rewards (the tie models' own rule)."""
    from prefpred.rewards.models import Davidson, RaoKupper

    model = {"davidson": Davidson, "rao-kupper": RaoKupper}[loss]()
    return float(model._tie_value(float(np.clip(rate, 1e-4, 1 - 1e-4))))


def tie_rate(loss: str, value: float) -> float:
    """P(TIE) at equal rewards for a tie parameter (the inverse of :func:`tie_value`)."""
    if loss == "davidson":  # nu / (2 + nu) with nu = exp(value), without overflow
        return float(expit(value - math.log(2.0)))
    return math.tanh(value / 2.0)  # rao-kupper: sigmoid(eta) - sigmoid(-eta)


def raw_tie(loss: str, value: float) -> float:
    """The unconstrained number that is trained: ``log nu`` as it is, ``log eta``."""
    return float(value) if loss == "davidson" else math.log(max(float(value), 1e-6))


def tie_from_raw(loss: str, raw: torch.Tensor) -> torch.Tensor:
    return raw if loss == "davidson" else raw.exp()


def reward_logits(d: torch.Tensor, loss: str, raw: torch.Tensor | None = None,
                  two_class: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 3) logits in class order (A, B, TIE) from reward differences ``d`` (n,).

    ``raw`` is the trained tie parameter (see :func:`raw_tie`); ``two_class`` (n,) marks rows
    without a tie outcome. ``softmax`` of the result is the loss's probabilities.
    """
    no_tie = torch.full_like(d, NO_TIE)
    if loss == "bt":
        return torch.stack([d / 2, -d / 2, no_tie], dim=1)
    if raw is None:
        raise ValueError(f"the {loss} loss needs its tie parameter")
    if loss == "davidson":
        out = torch.stack([d / 2, -d / 2, raw.to(d.dtype).expand_as(d)], dim=1)
    elif loss == "rao-kupper":
        eta = tie_from_raw(loss, raw.to(d.dtype))
        l_a, l_b = F.logsigmoid(d - eta), F.logsigmoid(-d - eta)
        l1 = F.logsigmoid(eta - d)  # P(TIE) = sigmoid(eta - d) - sigmoid(-eta - d)
        diff = (l_b - l1).clamp(max=-1e-12)
        out = torch.stack([l_a, l_b, l1 + torch.log(-torch.expm1(diff))], dim=1)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    if two_class is not None:
        tie = torch.where(two_class.to(torch.bool), no_tie, out[:, TIE])
        out = torch.cat([out[:, :TIE], tie[:, None]], dim=1)
    return out


def reward_loss(d: torch.Tensor, targets: torch.Tensor, loss: str,
                raw: torch.Tensor | None = None, two_class: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean negative log-likelihood (cross-entropy against ``targets`` (n, 3), which
    may be soft); the training objective up to the targets' entropy."""
    logp = torch.log_softmax(reward_logits(d, loss, raw, two_class), dim=-1)
    nll = -(targets.to(logp.dtype) * logp).sum(-1)
    w = torch.ones_like(nll) if weights is None else weights.to(nll.dtype)
    return (nll * w).sum() / w.sum().clamp(min=1e-12)


def training_targets(labels: np.ndarray, soft: np.ndarray | None, tie_allowed: np.ndarray | None,
                     loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows kept, targets (k, 3), two-class mask (k,)) for a loss.

    ``bt`` drops every row labelled TIE (as TRL and OpenRLHF do), moves any soft tie mass of the
    rows kept onto A and B in proportion, and treats every row as two-class. The tie-aware losses
    keep every row; rows without a tie option are two-class.
    """
    labels = np.asarray(labels)
    targets = (np.asarray(soft, dtype=np.float64) if soft is not None
               else np.eye(N_CLASSES)[labels])
    two_class = (np.zeros(len(labels), dtype=bool) if tie_allowed is None
                 else ~np.asarray(tie_allowed, dtype=bool))
    if loss == "bt":
        keep = np.flatnonzero(labels != TIE)
        t = targets[keep].copy()
        t[:, TIE] = 0.0
        empty = t.sum(1) <= 0  # a soft label all on TIE under a decisive hard label
        t[empty] = np.eye(N_CLASSES)[labels[keep][empty]]
        t /= t.sum(1, keepdims=True)
        return keep, t, np.ones(len(keep), dtype=bool)
    return np.arange(len(labels)), targets, two_class
