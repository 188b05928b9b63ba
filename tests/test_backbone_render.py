"""Rendering and turn-aware truncation of the backbone: budgets, symmetry, what was cut."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError
from prefpred.models.backbone.render import (
    allocate_budgets,
    build_template,
    render_pairs,
    render_texts,
)
from prefpred.testing import tiny_tokenizer

WORDS = ["alpha", "beta", "gamma", "delta", "code", "tie", "answer", "the", "Paris", "42", "你好",
         "\n", "Привет", "!", " "]


@pytest.fixture(scope="module")
def decoder_tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def encoder_tok():
    return tiny_tokenizer(encoder=True)


def _table(prompts, responses_a, responses_b) -> PreferenceTable:
    n = len(prompts)
    return PreferenceTable.from_frame(pl.DataFrame({
        "id": [str(i) for i in range(n)], "prompt": prompts, "response_a": responses_a,
        "response_b": responses_b, "label": [i % 3 for i in range(n)]}))


text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=60).map(" ".join)
turns = st.lists(text, min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(turns, turns, turns), min_size=1, max_size=6),
       max_length=st.integers(70, 260), share=st.floats(0.0, 0.9),
       min_resp=st.integers(1, 12), side=st.sampled_from(["left", "right"]))
def test_truncation_properties(decoder_tok, rows, max_length, share, min_resp, side):
    """Never over budget; both responses always present; the swapped pair gets the same
    budgets (A's and B's exchanged)."""
    table = _table(*map(list, zip(*rows, strict=True)))
    template = build_template(decoder_tok, encoder=False, instruction="Which is better?")
    kwargs = dict(max_length=max_length, prompt_share=share, min_response_tokens=min_resp,
                  truncation=side)
    if max_length - template.overhead < 2 * min_resp:
        with pytest.raises(ConfigError):
            render_pairs(table, decoder_tok, template, **kwargs)
        return
    out = render_pairs(table, decoder_tok, template, **kwargs)
    assert (out.lengths <= max_length).all()
    assert (out.kept <= out.full_lengths).all()
    # a response is never dropped: it keeps min(its length, min_response_tokens) at least
    for col in (1, 2):
        assert (out.kept[:, col] >= np.minimum(out.full_lengths[:, col], min_resp)).all()
    # the fixed markers of both responses are in every sequence, in order
    for ids in out.ids.to_list():
        a_at = _find(ids, template.mid_a)
        b_at = _find(ids, template.mid_b, start=a_at + len(template.mid_a))
        assert 0 <= a_at < b_at
    swapped = render_pairs(table.swap(), decoder_tok, template, **kwargs)
    assert np.array_equal(swapped.kept, out.kept[:, [0, 2, 1]])
    assert np.array_equal(swapped.lengths, out.lengths)


def _find(seq: list[int], sub: tuple[int, ...], start: int = 0) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if tuple(seq[i:i + len(sub)]) == sub:
            return i
    return -1


@given(n_p=st.integers(0, 3000), n_a=st.integers(0, 3000), n_b=st.integers(0, 3000),
       available=st.integers(2, 4000), share=st.floats(0, 0.95), min_resp=st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_allocation_is_within_budget_symmetric_and_uses_the_room(n_p, n_a, n_b, available,
                                                                 share, min_resp):
    if available < 2 * min_resp:
        with pytest.raises(ConfigError):
            allocate_budgets(np.array([n_p]), np.array([n_a]), np.array([n_b]), available,
                             prompt_share=share, min_response_tokens=min_resp)
        return
    kp, ka, kb = (int(x[0]) for x in allocate_budgets(
        np.array([n_p]), np.array([n_a]), np.array([n_b]), available, prompt_share=share,
        min_response_tokens=min_resp))
    assert kp + ka + kb <= available
    assert 0 <= kp <= n_p and 0 <= ka <= n_a and 0 <= kb <= n_b
    assert ka >= min(n_a, min_resp) and kb >= min(n_b, min_resp)
    kp2, kb2, ka2 = (int(x[0]) for x in allocate_budgets(
        np.array([n_p]), np.array([n_b]), np.array([n_a]), available, prompt_share=share,
        min_response_tokens=min_resp))
    assert (kp2, ka2, kb2) == (kp, ka, kb)
    # re-allocation: at most one token (an odd split) is left unused while something is cut
    if n_p + n_a + n_b > available:
        assert kp + ka + kb >= available - 1


def test_unused_budget_is_reallocated():
    # a short prompt leaves its share to the responses; a short response leaves its half to B
    kp, ka, kb = allocate_budgets(np.array([10, 500, 10]), np.array([500, 500, 20]),
                                  np.array([500, 500, 500]), 200, prompt_share=0.25,
                                  min_response_tokens=8)
    assert kp[0] == 10 and ka[0] == 95 and kb[0] == 95  # responses share all 190
    assert kp[1] == 50 and ka[1] == 75 and kb[1] == 75  # prompt capped at a quarter
    assert kp[2] == 10 and ka[2] == 20 and kb[2] == 170  # B takes what A leaves


def test_left_truncation_keeps_the_latest_turns_and_records_cuts(decoder_tok):
    old = "alpha beta gamma delta " * 30
    prompt = [old, old, "the final question"]
    table = _table([prompt], [["short answer A"]], [["answer B " * 80]])
    template = build_template(decoder_tok, encoder=False)
    out = render_pairs(table, decoder_tok, template, max_length=160, prompt_share=0.2,
                       min_response_tokens=8, truncation="left")
    text = decoder_tok.decode(out.ids[0].to_list())
    assert "the final question" in text and "short answer A" in text
    report = out.report.row(0, named=True)
    assert report["prompt_cut"] > 0 and report["prompt_turns_dropped"] >= 1
    assert report["a_cut"] == 0 and report["b_cut"] > 0
    assert report["prompt_kept"] + report["prompt_cut"] == report["prompt_tokens"]
    assert report["tokens"] == len(out.ids[0]) <= 160
    right = render_pairs(table, decoder_tok, template, max_length=160, prompt_share=0.2,
                         min_response_tokens=8, truncation="right")
    assert "the final question" not in decoder_tok.decode(right.ids[0].to_list())


def test_decoder_uses_the_chat_template_and_encoder_the_markers(decoder_tok, encoder_tok):
    table = _table([["what is 2+2"]], [["4"]], [["five"]])
    dec = build_template(decoder_tok, encoder=False, instruction="Which is better?")
    text = decoder_tok.decode(render_pairs(table, decoder_tok, dec, max_length=128).ids[0])
    assert text.startswith("<|user|>") and text.rstrip().endswith("<|assistant|>")
    assert text.index("what is 2+2") < text.index("# Response A") < text.index("# Response B")
    plain = build_template(decoder_tok, encoder=False, use_chat_template=False)
    assert "<|user|>" not in decoder_tok.decode(
        render_pairs(table, decoder_tok, plain, max_length=128).ids[0])
    enc = build_template(encoder_tok, encoder=True)
    ids = render_pairs(table, encoder_tok, enc, max_length=128).ids[0].to_list()
    assert ids[0] == encoder_tok.cls_token_id and ids[-1] == encoder_tok.sep_token_id
    assert ids.count(encoder_tok.sep_token_id) == 3


def test_texts_encoding_renders_each_distinct_text_once(encoder_tok):
    table = _table([["same prompt"], ["same prompt"], ["other"]], [["x"], ["y"], ["x"]],
                   [["y"], ["x"], ["z"]])
    enc = build_template(encoder_tok, encoder=True)
    out = render_texts(table, encoder_tok, enc, max_length=64)
    assert len(out.ids) == 2 + 3  # prompts {same, other}, responses {x, y, z}
    assert out.index[0, 0] == out.index[1, 0] != out.index[2, 0]
    assert out.index[0, 1] == out.index[1, 2] == out.index[2, 1]
    swapped = render_texts(table.swap(), encoder_tok, enc, max_length=64)
    assert np.array_equal(swapped.kept, out.kept[:, [0, 2, 1]])


def test_real_rows_render_within_budget(kaggle_table, encoder_tok):
    enc = build_template(encoder_tok, encoder=True)
    out = render_pairs(kaggle_table, encoder_tok, enc, max_length=256)
    assert len(out.ids) == 1000 and out.lengths.max() <= 256
    multi = out.report.filter(pl.col("prompt_turns_dropped") > 0)
    assert multi.height > 0  # the sample has long multi-turn prompts; early turns are dropped
