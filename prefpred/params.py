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
from prefpred.io import SAFE_NAME, safe_name, write_json_atomic


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
        params.update(read_params_file(path))
    for item in overrides or []:
        key, value = parse_param(item)
        params[key] = value
    return params


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The parameters in a TOML or JSON file (flat, or under ``params`` beside other keys, as
    ``prefpred tune`` saves them), or in saved parameters by name. The file must hold a table
    of keys; the values are checked later, against the model they are for."""
    p = Path(path)
    if not p.exists():
        p = resolve_saved_params(str(path))
    if not p.is_file():
        raise ConfigError(f"{p}: is a folder, expected a parameter file")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: a parameter file must be UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: cannot parse parameters ({err.msg} at line {err.lineno}, "
                          f"column {err.colno})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: cannot parse parameters ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a table of parameters, got {type(data).__name__}")
    params = data.get("params", data)
    if not isinstance(params, dict):
        raise ConfigError(f"{p}: 'params' must be a table of parameters, got "
                          f"{type(params).__name__}")
    return dict(params)


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
    path = params_dir() / f"{safe_name(name, 'saved parameters name')}.json"
    write_json_atomic(path, {"model": model, "params": params, **meta})
    return path


def resolve_saved_params(name: str) -> Path:
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"no parameter file {name!r} (and it cannot be the name of saved "
                          "parameters)")
    path = params_dir() / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in params_dir().glob("*.json")) if params_dir().is_dir() else []
        raise ConfigError(f"no parameter file {name!r} and no saved parameters of that name in "
                          f"{params_dir()} (saved: {known})")
    return path
