"""Building things by name (models, calibrators, stackers, tie models) and reading their saved
JSON artifacts, with one-line errors."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError, DataError


def instantiate(registry: Mapping[str, Callable[..., Any]], name: str, what: str,
                params: Mapping[str, Any] | None = None) -> Any:
    """``registry[name](**params)``; an unknown name or parameter is a :class:`ConfigError`."""
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    try:
        return registry[name](**dict(params or {}))
    except TypeError as err:
        raise ConfigError(f"{what} {name!r}: {err}") from None


def constructor_params(obj: object) -> dict[str, Any]:
    """Every ``__init__`` argument of ``obj`` read back from the attribute of the same name
    (tuples as lists, so the result is JSON as saved): ``get_params`` for classes that store
    their arguments unchanged, so that ``type(obj)(**constructor_params(obj))`` rebuilds it."""
    names = [n for n in inspect.signature(type(obj).__init__).parameters if n != "self"]
    return {n: list(v) if isinstance(v := getattr(obj, n), tuple) else v for n in names}


def read_artifact(path: str | Path, kind: str, what: str) -> dict[str, Any]:
    """The JSON object saved at ``path`` whose ``"kind"`` is ``kind`` (else a located error)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file not found", file=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not a {what} file (bad JSON: {err.msg})", file=path) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise DataError(f'not a {what} file (no "kind": "{kind}")', file=path)
    return data
