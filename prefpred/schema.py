"""Configuration files are validated by pydantic models; this turns their errors into one line.

Every configuration prefpred reads (a run TOML, a competition TOML, a backbone config, a
parameter file, a model's parameters) is checked by one schema when it is read. The first
problem becomes a :class:`~prefpred.errors.ConfigError` naming the file, the section and the
key: an unknown key comes with the closest valid one ("did you mean ..."), a wrong type or an
out-of-range value with what was expected.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from prefpred.errors import ConfigError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Schema(BaseModel):
    """Base of prefpred's configuration schemas: unknown keys are refused, types are strict
    (a TOML string is never silently read as a number), values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def closest(key: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid key, or nothing."""
    match = difflib.get_close_matches(str(key), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _where(loc: tuple, top: str | None) -> tuple[str, str | None]:
    """(``[section]`` or ``[[section]] #n`` text, the offending key) of a pydantic location.

    Union member tags (``literal[...]``, ``list[...]``) are dropped; a list index after a table
    name numbers an array of tables (``[[models]] #2``); a final index is an item of a list
    value (``candidates item 2``)."""
    parts = [p for p in loc if not (isinstance(p, str) and (
        p.startswith("function-") or "[" in p or "'" in p))]
    item = None
    if parts and isinstance(parts[-1], int):
        item = parts.pop()
    key = parts.pop() if parts and isinstance(parts[-1], str) else None
    if key is not None and item is not None:
        key = f"{key} item {item + 1}"
    names = [str(p) for p in parts if isinstance(p, str)]
    numbers = [f"#{p + 1}" for p in parts if isinstance(p, int)]
    if not names:
        return (top or ""), key
    text = "[" + ".".join(names) + "]"
    if numbers:
        text = "[" + text + "] " + " ".join(numbers)
    return text, key


def config_error(err: ValidationError, schema: type[BaseModel], file: str | Path | None,
                 top: str | None = None) -> ConfigError:
    """The first problem of a validation error as one line naming file, section and key."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    where, key = _where(tuple(first["loc"]), top)
    head = f"{file}: " if file is not None else ""
    head += f"{where} " if where else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        options = _keys_at(schema, tuple(first["loc"])[:-1])
        return ConfigError(f"{head}unknown key {key!r}{closest(key, options)}; valid keys: "
                           f"{sorted(options)}")
    if kind == "missing":
        return ConfigError(f"{head}missing key {key!r}")
    value = first.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 \
        else type(value).__name__
    msg = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{head}{key + ' = ' if key else ''}{shown}: {msg}")


def _keys_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at a location, for suggestions."""
    model: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = _inner_model(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None``, ``list[X]``, ``tuple[X, ...]``."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def validate(schema: type[M], data: Mapping[str, Any], file: str | Path | None = None,
             top: str | None = None) -> M:
    """``data`` checked against ``schema``; the first problem as a one-line ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: expected a table of keys, got {type(data).__name__}")
    try:
        return schema.model_validate(dict(data))
    except ValidationError as err:
        raise config_error(err, schema, file, top) from None


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file's table; a missing, unreadable or malformed file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid TOML ({' '.join(str(err).split())})") from None


def dataclass_from_params(cls: type[T], params: Mapping[str, Any], what: str,
                          file: str | Path | None = None) -> T:
    """A (pydantic-checked) dataclass from a parameter mapping: an unknown key names the closest
    known one, a wrong value is one line (``what``: e.g. "backbone parameter")."""
    import dataclasses

    from pydantic import TypeAdapter

    head = f"{file}: " if file is not None else ""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{head}unknown {what} {unknown[0]!r}{closest(unknown[0], known)}; "
                          f"known: {sorted(known)}")
    try:
        obj = TypeAdapter(cls).validate_python(dict(params))
    except ValidationError as err:
        raise config_error(err, cls, file, what) from None
    except ConfigError as err:
        raise ConfigError(f"{head}{err}") from None
    # NaN passes every range check written as a comparison (nan <= 0 is false): refuse it here,
    # once for every parameter dataclass
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{head}{what} {f.name}={value!r}: must be a finite number")
    return obj

