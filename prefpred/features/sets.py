"""Named subsets of the feature columns, for models and ablations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prefpred.errors import ConfigError


def _all(name: str) -> bool:
    return True


def _no_last(name: str) -> bool:
    return not name.endswith("_last")


def _pairwise(name: str) -> bool:
    """Symmetric and antisymmetric columns only (no raw A / B columns)."""
    return not name.startswith(("a_", "b_"))


def _length(name: str) -> bool:
    """Eight length features: characters and words of A and B (all turns), their difference
    and log-ratio: the classic length-only baseline."""
    return name.startswith(("a_", "b_", "d_", "lr_")) and \
        name.split("_", 1)[1] in ("chars_all", "words_all")


#: name -> predicate over column names (the ``source`` column is handled by the model).
FEATURE_SETS: Final[dict[str, Callable[[str], bool]]] = {
    "all": _all,
    "no-last": _no_last,
    "pairwise": _pairwise,
    "length": _length,
}


def select_features(columns: list[str], name: str) -> list[str]:
    """The numeric feature columns of set ``name`` (``source`` excluded), in their order."""
    if name not in FEATURE_SETS:
        raise ConfigError(f"unknown feature_set {name!r}; choose one of {sorted(FEATURE_SETS)}")
    keep = FEATURE_SETS[name]
    return [c for c in columns if c != "source" and keep(c)]
