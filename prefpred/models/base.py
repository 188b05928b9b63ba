"""The model protocol every base model follows, the registry, saving and loading a fitted
model, and swap averaging."""

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

    # A fitted model saves and restores its learned state (beside ``model.json``, which
    # :func:`save_model` writes) with ``save_state(folder)`` / ``load_state(folder)``.


def set_work_dir(model: object, path: Path | None) -> None:
    """Give a model a folder for checkpoints and caches, if it takes one (``set_work_dir``)."""
    if path is not None and hasattr(model, "set_work_dir"):
        model.set_work_dir(Path(path))


def swap_averaged_logits(predict: Callable[[PreferenceTable], np.ndarray],
                         table: PreferenceTable) -> np.ndarray:
    """Mean of the log-probabilities of each pair and of its swap (classes mapped back).

    With this, P(A | x) equals P(B | swap(x)) exactly, whatever ``predict`` does.
    """
    return average_with_swap(predict(table), predict(table.swap()))


def average_with_swap(direct: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """The swap average of logits of the pairs (``direct``) and of their swaps (``swapped``,
    classes as the swapped table names them)."""
    return (log_softmax(direct) + swap_class_columns(log_softmax(swapped))) / 2.0


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


#: A saved model folder: ``model.json`` (name, parameters, format) and the model's own files.
MODEL_FILE = "model.json"
MODEL_FORMAT = 1


def _state_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a saved model but ``model.json``, by relative path."""
    from prefpred.io import file_sha256

    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p != folder / MODEL_FILE}


def write_model_info(folder: Path, name: str, params: dict[str, Any]) -> None:
    """``folder/model.json``: the model's name and parameters, and the digests of the state
    files already in ``folder``."""
    import json

    info = {"kind": "prefpred-model", "format": MODEL_FORMAT, "model": name, "params": params,
            "files": _state_digests(folder)}
    (folder / MODEL_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str),
                                     encoding="utf-8")


def save_model(model: PreferenceModel, name: str, folder: str | Path) -> Path:
    """Write a fitted registered model to ``folder`` (replacing what is there): its parameters
    in ``model.json`` and its learned state in the files its ``save_state`` writes. Written
    under a temporary name and renamed into place."""
    from prefpred.io import atomic_dir

    with atomic_dir(folder) as tmp:
        model.save_state(tmp)
        write_model_info(tmp, name, model.get_params())
    return Path(folder)


def load_model(folder: str | Path, **overrides: Any) -> PreferenceModel:
    """A model saved by :func:`save_model`, ready to predict. Its parameters pass the model's
    schema like any other; ``overrides`` change run-time parameters (where and how to predict).
    A folder that is not a saved model, or whose files do not load, is a one-line error."""
    import zipfile

    from prefpred.errors import DataError
    from prefpred.io import read_json_header

    folder = Path(folder)
    file = folder / MODEL_FILE
    info = read_json_header(folder, MODEL_FILE, "prefpred-model", MODEL_FORMAT,
                            "saved prefpred model")
    if not isinstance(info.get("params"), dict):
        raise DataError("a saved model needs its params", file=file, column="params")
    name = info.get("model")
    if name not in model_names():
        raise DataError(f"unknown model {name!r}", file=file, column="model")
    # no file reaches a native parser (LightGBM, safetensors, numpy) unless it is the one saved
    if not isinstance(info.get("files"), dict) or _state_digests(folder) != info["files"]:
        have, want = _state_digests(folder), info.get("files")
        want = want if isinstance(want, dict) else {}
        bad = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise DataError(f"the saved model's files differ from the digests in {MODEL_FILE} "
                        f"({', '.join(bad[:3]) or 'no digests'}): damaged or altered",
                        file=folder)
    cls = model_class(name)
    try:
        if hasattr(cls, "from_saved"):  # models that rebuild themselves from their own files
            return cls.from_saved(folder, **overrides)
        # where a model writes (a cache folder) is never taken from a file: the caller's or none
        params = {**info["params"], **{k: None for k in getattr(cls, "WRITE_PARAMS", ())},
                  **overrides}
        model = build_model(name, params)
        model.load_state(folder)
    except ConfigError as err:
        raise DataError(f"the saved {name} model: {err}", file=file) from None
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"the saved {name} model does not load "
                        f"({' '.join(str(err).split())[:200]})", file=folder) from None
    return model
