"""The compiled feature kernels: each count against Python's ``re`` and sets on any text, the
whole feature frame bit-identical with and without them (real rows and fuzzed tables), and the
guards around them (class table from the patterns, argument checks, pattern drift)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefpred.data.table import PreferenceTable
from prefpred.features import compute_features, kernels
from prefpred.features import patterns as P

#: Characters from every class the kernels tell apart, and their borders.
EDGE_CHARS = ("aZ09 \t\n\r\f\v\u00a0\u3000.!?。！？,;:-_*#`|$()[]{}\\/\"'"
              "\u00bf\u00c0\u00d7\u00de\u00df\u00ff\u024f\u0250\u0130\u0131\u03a3\u03c3\u03c2"
              "\u03bfПривет\u0400\u04ff\u0500ёЁ你好\u3040\u30ff\u3400\u4dbf\u4e00\u9fff"
              "\uac00\ud7af\uf900\ufaff\uff01\uff0c\uff1f\u2014\u2026\u2600\u27bf\u2b50\u2b55"
              "\U0001F300\U0001F600\U0001FAFF\U0001FB00\U0002FFFF\U00030000\U0010FFFF\x00"
              "\u0301\u200b\ufeff")
#: Pieces of real-looking text: words of several scripts, separators, terminators, markup.
FRAGMENTS = ("ab", "Word", "x1", "Дом", "你好", "é", "😀", " ", "  ", "\n", "\n\n", "\t", ". ",
             "!", "？", "。", "...", "*", "**", "# ", "- ", "1. ", "`", "\u00a0", "\r\n")
TEXT = st.one_of(
    st.text(alphabet=st.one_of(st.sampled_from(EDGE_CHARS),
                               st.characters(codec="utf-8", exclude_categories=("Cs",))),
            max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join),
)
WORD_RE = re.compile(P.WORD)


def test_the_kernels_are_built_by_the_install():
    """`make` (pip install -e .) compiles them; a machine without a C compiler would fall back
    to polars, silently slower, so CI checks that they are there."""
    assert kernels.installed(), "prefpred.features._kernels was not compiled"
    assert kernels.available() or kernels.os.environ.get("PREFPRED_FEATURE_KERNELS") == "0"


def test_class_table_is_the_patterns_and_nothing_lies_above_it():
    table = kernels.class_table()
    above = "".join(map(chr, range(kernels.TABLE_SIZE, 0x110000)))
    assert table.dtype == np.uint16 and len(table) == kernels.TABLE_SIZE
    for bit, (name, pattern) in enumerate(kernels.CLASS_BITS):
        rx = re.compile(pattern)
        members = np.flatnonzero(table & (1 << bit))
        assert len(members), name
        for cp in [*members[:: max(1, len(members) // 50)], members[-1]]:
            assert rx.fullmatch(chr(cp)), (name, hex(cp))
        # no member above the table: one pass over every remaining code point
        assert rx.search(above) is None, name


def _python_counts(text: str) -> list[int]:
    counted = {n: len(re.findall(P.COUNTED[n], text)) for n in kernels.TEXT_COUNTS if n != "chars"}
    return [len(text) if n == "chars" else counted[n] for n in kernels.TEXT_COUNTS]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(texts=st.lists(st.one_of(st.none(), TEXT), min_size=1, max_size=8))
def test_text_counts_are_pythons_for_any_text(texts):
    series = pl.Series("t", texts, dtype=pl.String)
    for s in (series, series[1:]):  # also a sliced column (offset buffers)
        got = kernels.text_counts(s)
        want = [_python_counts(t or "") for t in s.to_list()]
        assert got.tolist() == want


@settings(max_examples=150, deadline=None, derandomize=True)
@given(texts=st.lists(TEXT, min_size=1, max_size=6), words=st.lists(
    st.sampled_from(["a", "b", "ab", "Дом", "你", "x1", "é"]), max_size=40))
def test_word_ngrams_and_overlap_are_pythons(texts, words):
    texts = [*texts, " ".join(words)]  # repeated trigrams are likely here
    low = [t.lower() for t in texts]
    grams = kernels.word_ngrams(pl.Series(low))
    for text, (n, rep) in zip(low, grams.tolist(), strict=True):
        toks = WORD_RE.findall(text)
        tri = list(zip(toks, toks[1:], toks[2:], strict=False))
        assert (n, rep) == (len(tri), len(tri) - len(set(tri)))
    p, a, b = (pl.Series([low[i % len(low)], low[(i + 1) % len(low)], ""]) for i in range(3))
    got = kernels.word_overlap(p, a, b)
    for row, docs in zip(got.iter_rows(named=True), zip(p, a, b, strict=True), strict=True):
        tp, ta, tb = (Counter(WORD_RE.findall(d)) for d in docs)
        want = Counter()
        for term in set(tp) | set(ta) | set(tb):
            df = (term in tp) + (term in ta) + (term in tb)
            c = {"p": tp[term], "a": ta[term], "b": tb[term]}
            for x, y in ("pp", "aa", "bb", "ab", "pa", "pb"):
                if x == y or df >= 2:
                    want[f"{x}{y}{df}"] += c[x] * c[y]
        want.update(np=len(tp), iab=len(set(ta) & set(tb)), uab=len(set(ta) | set(tb)),
                    ipa=len(set(tp) & set(ta)), ipb=len(set(tp) & set(tb)))
        assert row == {c: want.get(c, 0) for c in kernels.WORD_COLUMNS}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(a=st.lists(TEXT, min_size=1, max_size=5), b=st.lists(TEXT, min_size=1, max_size=5))
def test_char_overlap_is_pythons_sets(a, b):
    b = (b + a)[: len(a)] if len(b) < len(a) else b[: len(a)]
    got = kernels.char_overlap(pl.Series(a), pl.Series(b))
    for x, y, (na, nb, both) in zip(a, b, got.tolist(), strict=True):
        gx, gy = ({s[i:i + 3] for i in range(len(s) - 2)} for s in (x, y))
        assert (na, nb, both) == (len(gx), len(gy), len(gx & gy))


def _assert_bit_identical(table: PreferenceTable) -> None:
    fast = compute_features(table, use_kernels=True)
    slow = compute_features(table, use_kernels=False)
    assert fast.columns == slow.columns and fast.dtypes == slow.dtypes
    assert fast["source"].to_list() == slow["source"].to_list()
    for col in fast.columns[1:]:
        x, y = fast[col].to_numpy(), slow[col].to_numpy()
        assert np.array_equal(x.view(np.uint64), y.view(np.uint64)), col  # bits, not ==


def test_features_are_bit_identical_on_every_real_row(shared_all):
    _assert_bit_identical(shared_all)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(*[st.lists(TEXT, min_size=1, max_size=3)] * 3),
                     min_size=1, max_size=5))
def test_features_are_bit_identical_on_fuzzed_tables(rows):
    _assert_bit_identical(PreferenceTable.from_frame(pl.DataFrame({
        "id": [str(i) for i in range(len(rows))],
        "prompt": [r[0] for r in rows], "response_a": [r[1] for r in rows],
        "response_b": [r[2] for r in rows], "label": [i % 3 for i in range(len(rows))]})))


def test_the_environment_switch_turns_them_off(monkeypatch):
    monkeypatch.setenv("PREFPRED_FEATURE_KERNELS", "0")
    assert not kernels.available()
    assert kernels.describe() == "polars alone: PREFPRED_FEATURE_KERNELS=0"
    monkeypatch.setenv("PREFPRED_FEATURE_KERNELS", "1")
    assert kernels.available() and kernels.describe() == "compiled kernels"


def test_without_the_extension_polars_computes_the_same_and_asking_for_it_fails(monkeypatch):
    table = PreferenceTable.from_frame(pl.DataFrame({
        "id": ["0"], "prompt": [["Hi?"]], "response_a": [["Hello there. Fine!"]],
        "response_b": [["Привет 你好"]], "label": [2]}))
    want = compute_features(table, use_kernels=True)
    monkeypatch.setattr(kernels, "_kernels", None)  # as on a machine without a C compiler
    assert not kernels.available() and "not installed" in kernels.describe()
    assert compute_features(table).equals(want)
    with pytest.raises(RuntimeError, match="not installed"):
        compute_features(table, use_kernels=True)


def test_bad_arguments_are_refused_not_read_out_of_bounds():
    data = np.frombuffer(b"hello", dtype=np.uint8)
    table = kernels.class_table()
    with pytest.raises(ValueError, match="offsets do not fit"):
        kernels._kernels.text_counts(data, np.array([0, 9], dtype=np.int64), table,
                                     np.zeros((1, len(kernels.TEXT_COUNTS)), dtype=np.int64))
    with pytest.raises(ValueError, match="offsets do not fit"):
        kernels._kernels.text_counts(data, np.array([3, 1], dtype=np.int64), table,
                                     np.zeros((1, len(kernels.TEXT_COUNTS)), dtype=np.int64))
    with pytest.raises(ValueError, match="out must hold"):
        kernels._kernels.text_counts(data, np.array([0, 5], dtype=np.int64), table,
                                     np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="differ in number"):
        off = np.array([0, 5], dtype=np.int64)
        kernels._kernels.char_overlap(data, off, data, np.array([0, 2, 5], dtype=np.int64),
                                      np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(BufferError):  # a read-only output
        kernels._kernels.word_ngrams(data, np.array([0, 5], dtype=np.int64), table, b"x" * 16)
    with pytest.raises(TypeError, match="expected 4 arguments"):
        kernels._kernels.word_ngrams(data, np.array([0, 5], dtype=np.int64), table)
    with pytest.raises(ValueError, match="offsets must be int64"):
        kernels._kernels.word_ngrams(data, b"\0" * 12, table, np.zeros(2, dtype=np.int64))


def test_a_changed_pattern_stops_the_kernels(monkeypatch):
    kernels.check_patterns()
    monkeypatch.setitem(P.COUNTED, "words", r"\S+")
    with pytest.raises(RuntimeError, match="pattern of 'words' changed"):
        kernels.check_patterns()
    monkeypatch.undo()
    monkeypatch.setattr(P, "WORD", r"\w+")
    with pytest.raises(RuntimeError, match="pattern of 'WORD' changed"):
        kernels.check_patterns()
