"""The model protocol every base model follows, the registry, and swap averaging."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, ModelError
from prefpred.labels import N_CLASSES, swap_class_columns
from prefpred.probabilities import log_softmax
from prefpred.registry import instantiate


@runtime_checkable
class PreferenceModel(Protocol):
    """Fit on a table; emit logits of shape (n, 3) in class order (A, B, TIE).

    Probabilities appear only after calibration: models never return them.
    """

    def fit(self, table: PreferenceTable) -> PreferenceModel: ...

    def predict_logits(self, table: PreferenceTable) -> np.ndarray: ...

    def get_params(self) -> dict[str, Any]: ...


def set_work_dir(model: object, path: Path | None) -> None:
    """Give a model a folder for checkpoints and caches, if it takes one (``set_work_dir``)."""
    if path is not None and hasattr(model, "set_work_dir"):
        model.set_work_dir(Path(path))


def swap_averaged_logits(predict: Callable[[PreferenceTable], np.ndarray],
                         table: PreferenceTable) -> np.ndarray:
    """Mean of the log-probabilities of each pair and of its swap (classes mapped back).

    With this, P(A | x) equals P(B | swap(x)) exactly, whatever ``predict`` does.
    """
    direct = log_softmax(predict(table))
    swapped = swap_class_columns(log_softmax(predict(table.swap())))
    return (direct + swapped) / 2.0


def check_logits(logits: np.ndarray, n_rows: int, who: str = "model") -> np.ndarray:
    """Logits (n, 3) as float64, or a one-line :class:`ModelError` naming the first bad row."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (n_rows, N_CLASSES):
        raise ModelError(f"{who} returned logits of shape {logits.shape}, expected "
                         f"({n_rows}, {N_CLASSES})")
    bad = ~np.isfinite(logits).all(1)
    if bad.any():
        raise ModelError(f"{who} returned non-finite logits ({int(bad.sum())} rows, first row "
                         f"{int(np.flatnonzero(bad)[0]) + 1}); nothing was written")
    return logits


#: model name -> "module:Class". Classes are imported only when asked for.
MODEL_REGISTRY: dict[str, str] = {
    "prior": "prefpred.models.prior:ClassPrior",
    "uniform": "prefpred.models.prior:Uniform",
    "lgbm": "prefpred.models.lgbm:LightGBMModel",
    "tfidf": "prefpred.models.tfidf:TfidfModel",
    "backbone": "prefpred.models.backbone:BackboneModel",
}


def model_names() -> list[str]:
    """Registered models whose code is present in this installation."""
    return sorted(n for n, target in MODEL_REGISTRY.items()
                  if importlib.util.find_spec(target.split(":")[0]) is not None)


def model_class(name: str) -> type:
    if name not in MODEL_REGISTRY or name not in model_names():
        raise ConfigError(f"unknown model {name!r}; choose one of {model_names()}")
    module, cls = MODEL_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, params: dict[str, Any] | None = None) -> PreferenceModel:
    """Instantiate a registered model with keyword parameters (unknown keys are an error)."""
    return instantiate({name: model_class(name)}, name, "model", params)
