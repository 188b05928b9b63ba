"""Swap symmetry by construction: features(table.swap()) == swap_features(features(table)),
exactly, for every feature column, on real rows drawn by hypothesis."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefpred.features import compute_features, feature_names, swap_features, swap_partner
from prefpred.features.symmetry import check_roles, feature_role


def assert_exactly_equal(left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert left.columns == right.columns
    for col in left.columns:
        a, b = left[col], right[col]
        if a.dtype == pl.String:
            assert a.to_list() == b.to_list(), col
        else:  # exact (-0.0 == 0.0), and no NaN anywhere
            x, y = a.to_numpy(), b.to_numpy()
            assert np.array_equal(x, y), f"{col}: {x[x != y][:3]} != {y[x != y][:3]}"


def test_swap_of_every_real_row(shared_all):
    f = compute_features(shared_all)
    assert_exactly_equal(compute_features(shared_all.swap()), swap_features(f))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_swap_symmetry_property_on_real_rows(shared_all, data):
    n = len(shared_all)
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=16, unique=True))
    sub = shared_all.take(idx)
    f = compute_features(sub)
    assert_exactly_equal(compute_features(sub.swap()), swap_features(f))
    # and the swap is an involution
    assert_exactly_equal(swap_features(swap_features(f)), f)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(texts=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                              max_size=40), min_size=3, max_size=3))
def test_swap_symmetry_property_on_arbitrary_text(texts):
    from prefpred.data.table import PreferenceTable

    t = PreferenceTable.from_frame(pl.DataFrame({
        "id": ["0"], "prompt": [[texts[0]]], "response_a": [[texts[1]]],
        "response_b": [[texts[2], texts[0]]], "label": [0]}))
    assert_exactly_equal(compute_features(t.swap()), swap_features(compute_features(t)))


def test_roles_cover_every_feature_and_pair_up():
    names = feature_names()
    check_roles(names)
    roles = {n: feature_role(n) for n in names}
    assert {"a", "b", "anti", "sym"} == set(roles.values())
    for n in names:
        if roles[n] in ("a", "b"):
            assert swap_partner(swap_partner(n)) == n and swap_partner(n) != n
        else:
            assert swap_partner(n) == n
    assert roles["d_chars_all"] == "anti" and roles["lr_chars_all"] == "anti"
    assert roles["s_tfidf_cos"] == "sym" and roles["source"] == "sym"


def test_a_column_without_a_role_or_partner_is_refused():
    with pytest.raises(KeyError, match="no swap role"):
        swap_features(pl.DataFrame({"length_a": [1.0]}))
    with pytest.raises(KeyError, match="no partner"):
        swap_features(pl.DataFrame({"a_only": [1.0]}))
