"""Baselines: the uniform forecast and the (weighted) class prior."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from prefpred.data.table import PreferenceTable
from prefpred.labels import N_CLASSES
from prefpred.registry import NonNegative
from prefpred.targets import Targets


class Uniform:
    """P = 1/3 for every class (log loss ln 3 = 1.0986)."""

    def fit(self, table: PreferenceTable) -> Uniform:
        return self

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        return np.zeros((len(table), N_CLASSES))

    def get_params(self) -> dict[str, Any]:
        return {}

    def save_state(self, folder: Path) -> None:
        """Nothing is learned."""

    def load_state(self, folder: Path) -> None:
        """Nothing is learned."""


class ClassPrior:
    """Logits = log of the training class frequencies (sample-weighted), the same for every row.

    ``symmetric=True`` (default) averages A and B, as swap augmentation would: position carries
    no information a pair-level model could justify. ``smoothing`` is added to each class count.
    """

    def __init__(self, symmetric: bool = True, smoothing: NonNegative = 1.0):
        self.symmetric = symmetric
        self.smoothing = smoothing
        self.log_prior_: np.ndarray | None = None

    def fit(self, table: PreferenceTable) -> ClassPrior:
        targets = Targets.from_table(table, what="fitting the prior")
        # a row judged without a tie option says nothing about the tie rate: the prior counts
        # three-class rows (all rows when there are no others)
        keep = ~targets.two_class if (~targets.two_class).any() else slice(None)
        counts = (targets.probs[keep] * targets.weight[keep, None]).sum(0) + self.smoothing
        if self.symmetric:
            counts[:2] = counts[:2].mean()
        self.log_prior_ = np.log(counts / counts.sum())
        return self

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.log_prior_ is None:
            raise RuntimeError("ClassPrior is not fitted")
        return np.tile(self.log_prior_, (len(table), 1))

    def get_params(self) -> dict[str, Any]:
        return {"symmetric": self.symmetric, "smoothing": self.smoothing}

    def save_state(self, folder: Path) -> None:
        (folder / "prior.json").write_text(json.dumps({"log_prior": self.log_prior_.tolist()}))

    def load_state(self, folder: Path) -> None:
        values = np.asarray(json.loads((folder / "prior.json").read_text())["log_prior"],
                            dtype=np.float64)
        if values.shape != (N_CLASSES,) or not np.isfinite(values).all():
            raise ValueError(f"log_prior must be {N_CLASSES} finite numbers")
        self.log_prior_ = values
