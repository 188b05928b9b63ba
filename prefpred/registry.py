"""Building things by name (models, calibrators, stackers, tie models), with one-line errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from prefpred.errors import ConfigError


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
    names = [n for n, p in inspect.signature(type(obj).__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {n: list(v) if isinstance(v := getattr(obj, n), tuple) else v for n in names}
