"""The one place that says how each feature column behaves when A and B are swapped.

Column names carry their role:

=========  =========================================  ==========================
prefix     meaning                                    under the swap
=========  =========================================  ==========================
``a_``     a property of response A                   becomes ``b_`` (same stat)
``b_``     a property of response B                   becomes ``a_`` (same stat)
``d_``     difference A - B                           negates
``lr_``    log-ratio log1p(A) - log1p(B)              negates
``s_``     a symmetric property of the pair           stays
``p_``     a property of the prompt                   stays
``source`` the row's source / competition             stays
=========  =========================================  ==========================

:func:`swap_features` applies the table; the property test checks that computing features of
``table.swap()`` gives exactly ``swap_features(features(table))`` for every column.
"""

from __future__ import annotations

from typing import Final, Literal

import polars as pl

Role = Literal["a", "b", "anti", "sym"]

_PREFIX_ROLES: Final[tuple[tuple[str, Role], ...]] = (
    ("a_", "a"), ("b_", "b"), ("d_", "anti"), ("lr_", "anti"), ("s_", "sym"), ("p_", "sym"),
)
_SYMMETRIC_COLUMNS: Final[frozenset[str]] = frozenset({"source"})


def feature_role(name: str) -> Role:
    """The swap role of a feature column (raises ``KeyError`` for a name without one)."""
    if name in _SYMMETRIC_COLUMNS:
        return "sym"
    for prefix, role in _PREFIX_ROLES:
        if name.startswith(prefix):
            return role
    raise KeyError(f"feature column {name!r} has no swap role (prefix a_, b_, d_, lr_, s_, p_)")


def swap_partner(name: str) -> str:
    """The column that holds this column's value after the swap (itself unless A/B-sided)."""
    role = feature_role(name)
    if role == "a":
        return "b_" + name[2:]
    if role == "b":
        return "a_" + name[2:]
    return name


def check_roles(columns: list[str]) -> None:
    """Every column has a role and every A/B column has its partner."""
    present = set(columns)
    for name in columns:
        partner = swap_partner(name)
        if partner not in present:
            raise KeyError(f"feature column {name!r} has no partner {partner!r}")


def swap_features(frame: pl.DataFrame) -> pl.DataFrame:
    """The features of every pair with A and B exchanged, derived from the unswapped ones."""
    check_roles(frame.columns)
    exprs = []
    for name in frame.columns:
        role = feature_role(name)
        if role == "anti":
            exprs.append((-pl.col(name)).alias(name))
        else:
            exprs.append(pl.col(swap_partner(name)).alias(name))
    return frame.select(exprs)
