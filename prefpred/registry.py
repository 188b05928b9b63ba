"""Building things by name (models, calibrators, stackers, tie models), with one-line errors.

The parameters of every registered class are checked against its constructor's signature before
it is built: the type hints (with their ``Annotated`` ranges, e.g. :data:`Positive`) are a
pydantic schema, so an unknown key (with the closest valid one), a wrong type or an
out-of-range value is one line naming the parameter, never a traceback from deep inside a fit.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from prefpred.errors import ConfigError

#: Ranges used in constructor signatures (checked by :func:`instantiate`).
Positive = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]


@functools.cache
def constructor_schema(cls: type) -> type[BaseModel] | None:
    """A pydantic model of ``cls.__init__``'s keyword arguments (None when it takes
    ``**kwargs``: such a class validates its parameters itself)."""
    init = cls.__init__
    if init is object.__init__:
        return create_model(f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid"))
    sig = inspect.signature(init)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    hints = typing.get_type_hints(init, include_extras=True)
    fields: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        default = ... if p.default is p.empty else p.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(
        extra="forbid", arbitrary_types_allowed=True), **fields)


def check_params(cls: type, params: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``params`` checked against ``cls``'s constructor (converted where pydantic converts, e.g.
    ``"7"`` to ``7``); only the given keys are returned, so defaults stay the class's own."""
    from prefpred.schema import config_error

    schema = constructor_schema(cls)
    if schema is None:
        return dict(params)
    try:
        model = schema.model_validate(dict(params))
    except ValidationError as err:
        raise config_error(err, schema, None, what) from None
    return {k: getattr(model, k) for k in params}


def instantiate(registry: Mapping[str, Callable[..., Any]], name: str, what: str,
                params: Mapping[str, Any] | None = None) -> Any:
    """``registry[name](**params)``; an unknown name, an unknown or ill-typed parameter and a
    value out of range are :class:`ConfigError` s."""
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    cls = registry[name]
    values = check_params(cls, params or {}, f"{what} {name!r}:") if isinstance(cls, type) \
        else dict(params or {})
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} {name!r}: {err}") from None


def constructor_params(obj: object) -> dict[str, Any]:
    """Every ``__init__`` argument of ``obj`` read back from the attribute of the same name
    (tuples as lists, so the result is JSON as saved): ``get_params`` for classes that store
    their arguments unchanged, so that ``type(obj)(**constructor_params(obj))`` rebuilds it."""
    names = [n for n, p in inspect.signature(type(obj).__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {n: list(v) if isinstance(v := getattr(obj, n), tuple) else v for n in names}
