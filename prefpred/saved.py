"""One way to save and load a fitted estimator (calibrators, stackers, tie models).

A saved estimator is one JSON file::

    {"kind": "calibrator", "format_version": 2, "name": "temperature",
     "params": {...constructor arguments...},
     "state": {"beta_": 1.23, ...fitted attributes...},
     "meta": {...optional, free-form...}}

Every fitted attribute is declared in the class's ``_state`` with a :class:`Spec` (its type,
number of dimensions and domain), so what is loaded is validated: the right keys and nothing
else, finite numbers, each value in its domain (a temperature that must be non-negative, a tie
parameter that must be positive), and then the class's own ``_check_state`` (shapes that must
agree). A file that breaks any of this is a one-line :class:`~prefpred.errors.DataError` naming
the file and the key; nothing in it can name code to run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from prefpred.errors import ConfigError, DataError
from prefpred.io import write_text_atomic
from prefpred.probabilities import softmax
from prefpred.registry import check_params, constructor_params, instantiate

FORMAT_VERSION = 2
_TOP_KEYS = {"kind", "format_version", "name", "params", "state"}


@dataclass(frozen=True)
class Spec:
    """What a fitted attribute may hold.

    ``kind``: ``"number"`` (float array of ``ndim`` dimensions; 0 is a scalar), ``"integer"``
    (a scalar), ``"text"`` (a string) or ``"texts"`` (a list of strings). Numbers must be finite
    and ``>= low`` (``> low`` when ``open_low``) and ``<= high`` where those are given.
    """

    kind: str = "number"
    ndim: int = 0
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def check(self, value: Any) -> str | None:
        """Why ``value`` does not fit (None when it does)."""
        if self.kind == "text":
            return None if isinstance(value, str) else "expected a string"
        if self.kind == "texts":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            return None if ok else "expected a list of strings"
        if self.kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            return "expected an integer"
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return "expected numbers"
        if arr.ndim != self.ndim or (isinstance(value, bool)):
            return f"expected {'a number' if self.ndim == 0 else f'a {self.ndim}-d array'}"
        if not np.isfinite(arr).all():
            return "values must be finite"
        if self.low is not None and ((arr <= self.low) if self.open_low else (arr < self.low)).any():
            return f"values must be {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None and (arr > self.high).any():
            return f"values must be <= {self.high:g}"
        return None

    def load(self, value: Any) -> Any:
        if self.kind == "number":
            arr = np.asarray(value, dtype=np.float64)
            return float(arr) if self.ndim == 0 else arr
        if self.kind == "integer":
            return int(value)
        return list(value) if self.kind == "texts" else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


class SavedEstimator:
    """Base class of every estimator prefpred saves as JSON.

    A family (``Calibrator``, ``Stacker``, ``TieModel``) sets ``kind`` and its own ``registry``
    dict; every concrete class sets ``name`` and lands in its family's registry. Subclasses
    declare their fitted attributes in ``_state`` (attribute name, ending in ``_`` -> Spec) and
    may add shape checks in ``_check_state``. The one predict method of every estimator is
    ``predict_logits`` (calibrated or stacked logits, i.e. log-probabilities);
    ``predict_proba`` is its softmax.
    """

    kind: ClassVar[str] = ""
    #: what a user calls one of the family's names, in messages ("calibration method")
    what: ClassVar[str] = ""
    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[SavedEstimator]]] = {}
    _state: ClassVar[dict[str, Spec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "registry" not in cls.__dict__ and cls.__dict__.get("name"):
            cls.registry[cls.name] = cls

    # ----------------------------------------------------------------- the estimator
    def get_params(self) -> dict[str, Any]:
        return constructor_params(self)

    def predict_logits(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return softmax(self.predict_logits(*args, **kwargs))

    def is_fitted(self) -> bool:
        return all(getattr(self, attr, None) is not None for attr in self._state)

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise RuntimeError(f"{type(self).__name__} is not fitted")

    def _check_state(self) -> None:
        """Raise ``ValueError`` when fitted attributes disagree (shapes, counts)."""

    def _dump(self, attr: str) -> Any:
        """The JSON value saved for a fitted attribute (override for non-JSON objects)."""
        return _jsonable(getattr(self, attr))

    def _restore(self, attr: str, value: Any) -> None:
        """Set a fitted attribute from its validated saved value (``ValueError`` if unusable)."""
        setattr(self, attr, value)

    # ----------------------------------------------------------------- persistence
    @classmethod
    def create(cls, name: str, **params: Any) -> SavedEstimator:
        """A fresh estimator of this family by name (unknown names and keys: ConfigError)."""
        return instantiate(cls.registry, name, cls.what or cls.kind, params)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"kind": self.kind, "format_version": FORMAT_VERSION, "name": self.name,
                "params": self.get_params(),
                "state": {attr: self._dump(attr) for attr in self._state}}

    def dumps(self, **meta: Any) -> str:
        """The saved JSON text (with optional free-form ``meta``)."""
        data = self.to_dict()
        if meta:
            data["meta"] = meta
        return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

    def save(self, path: str | Path, **meta: Any) -> Path:
        """Write the fitted estimator (and optional ``meta``) atomically as JSON."""
        write_text_atomic(path, self.dumps(**meta))
        return Path(path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: str | Path | None = None
                  ) -> SavedEstimator:
        """Rebuild and validate a saved estimator of this family (errors name ``file``)."""
        what = cls.kind

        def bad(message: str, key: str | None = None) -> DataError:
            return DataError(f"not a {what} file ({message})", file=file, column=key)

        if not isinstance(data, Mapping) or data.get("kind") != cls.kind:
            raise bad(f'no "kind": "{cls.kind}"', "kind")
        unknown = sorted(set(data) - _TOP_KEYS - {"meta"})
        missing = sorted(_TOP_KEYS - set(data))
        if unknown or missing:
            raise bad(f"unknown keys {unknown}" if unknown else f"missing keys {missing}",
                      (unknown or missing)[0])
        if data["format_version"] != FORMAT_VERSION:
            raise bad(f"format version {data['format_version']!r} is not {FORMAT_VERSION}; "
                      "refit it with this prefpred", "format_version")
        name = data["name"]
        if not isinstance(name, str) or name not in cls.registry:
            raise bad(f"unknown {cls.what or what} {name!r}; known {sorted(cls.registry)}",
                      "name")
        target = cls.registry[name]
        params, state = data["params"], data["state"]
        if not isinstance(params, Mapping) or not isinstance(state, Mapping):
            raise bad('"params" and "state" must be objects', "params")
        try:
            obj = target(**check_params(target, params, "parameters:"))
        except (ConfigError, TypeError, ValueError) as err:
            raise bad(f"parameters: {err}", "params") from None
        expected = set(target._state)
        if set(state) != expected:
            wrong = sorted(set(state) ^ expected)
            raise bad(f"state keys {sorted(state)} are not {sorted(expected)}", wrong[0])
        for attr, spec in target._state.items():
            why = spec.check(state[attr])
            if why is not None:
                raise bad(f"{attr}: {why}", attr)
        try:
            for attr, spec in target._state.items():
                obj._restore(attr, spec.load(state[attr]))
            obj._check_state()
        except ValueError as err:
            raise bad(str(err), "state") from None
        return obj

    @classmethod
    def load(cls, path: str | Path) -> SavedEstimator:
        """Read an estimator of this family written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{cls.kind} file not found", file=path)
        if path.is_dir():
            raise DataError(f"is a folder, expected a {cls.kind} JSON file", file=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"),
                              parse_constant=lambda c: math.nan)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"not a {cls.kind} file (bad JSON: {err})", file=path) from None
        return cls.from_dict(data, path)
