"""Model parameters: the one place they are parsed.

A model's parameters come from (later wins): a backbone run config or preset (``--config``,
``config =`` in a run TOML), a parameter file or the name of saved parameters (``--params``,
``params_file =``), inline values (``[models.params]``) and ``key=value`` overrides
(``--param``), then a backbone folder or name (``--backbone``, ``backbone =``).
:func:`model_params` applies that order for the CLI and for run configs alike. Saved parameters
(e.g. the best trial of ``prefpred tune``) are addressed by name.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError
from prefpred.io import write_json_atomic


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as a TOML literal (numbers, booleans, lists, strings)."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r} is not key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def load_params(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Model parameters from a TOML or JSON file, or saved parameters by name (optional),
    updated by ``key=value`` overrides."""
    params: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.exists():
            p = resolve_saved_params(str(path))
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{p}: cannot parse parameters ({err})") from None
        params.update(data.get("params", data))
    for item in overrides or []:
        key, value = parse_param(item)
        params[key] = value
    return params


def model_params(model: str, *, params_file: str | Path | None = None,
                 values: Mapping[str, Any] | None = None, overrides: list[str] | None = None,
                 backbone: str | None = None, config: str | None = None
                 ) -> dict[str, Any]:
    """The parameters of ``model`` from every place they can come from, in the order of the
    module docstring. ``backbone`` and ``config`` belong to the backbone model only."""
    params = load_params(params_file, None)
    params.update(values or {})
    params.update(load_params(None, overrides))
    if backbone is None and config is None:
        return params
    if model != "backbone":
        raise ConfigError(f"--backbone and --config are options of --model backbone, not "
                          f"--model {model}")
    from prefpred.models.backbone.config import load_backbone_config

    merged = {**(load_backbone_config(config) if config else {}), **params}
    if backbone is not None:
        merged["backbone"] = backbone
    return merged


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
