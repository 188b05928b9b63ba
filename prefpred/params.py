"""Saved model parameters (e.g. the best trial of a tuning study), addressed by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError
from prefpred.io import write_json_atomic


def params_dir() -> Path:
    """``$PREFPRED_PARAMS_DIR``, else ``runs/params`` under the working directory."""
    return Path(os.environ.get("PREFPRED_PARAMS_DIR", "runs/params"))


def save_params(name: str, model: str, params: dict[str, Any], **meta: Any) -> Path:
    path = params_dir() / f"{name}.json"
    write_json_atomic(path, {"model": model, "params": params, **meta})
    return path


def resolve_saved_params(name: str) -> Path:
    path = params_dir() / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in params_dir().glob("*.json")) if params_dir().is_dir() else []
        raise ConfigError(f"no parameter file {name!r} and no saved parameters of that name in "
                          f"{params_dir()} (saved: {known})")
    return path
