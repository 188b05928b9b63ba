"""The feature library: values on known text, agreement with the per-row reference on real rows,
row-wise computation (no labels, no neighbours), and the TF-IDF cosine being scikit-learn's."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefpred.data.table import PreferenceTable
from prefpred.features import compute_features, feature_names, feature_role
from prefpred.features.build import FeatureConfig
from prefpred.features.reference import reference_features


def make_table(rows: list[tuple[list[str], list[str], list[str]]], source: str = "t"
               ) -> PreferenceTable:
    return PreferenceTable.from_frame(pl.DataFrame({
        "id": [str(i) for i in range(len(rows))],
        "prompt": [r[0] for r in rows],
        "response_a": [r[1] for r in rows],
        "response_b": [r[2] for r in rows],
        "label": [i % 3 for i in range(len(rows))],
    }), source=source)


@pytest.fixture(scope="module")
def sample(shared_all) -> PreferenceTable:
    """About 400 real rows from every source, with multi-turn, empty and non-Latin rows."""
    df = shared_all.df.with_row_index("_i")
    multi = df.filter(pl.col("prompt").list.len() > 1)["_i"].head(40).to_list()
    empty = df.filter((pl.col("response_a").list.join("").str.strip_chars() == "")
                      | (pl.col("response_b").list.join("").str.strip_chars() == ""))["_i"].to_list()
    cjk = df.filter(pl.col("prompt").list.join("").str.contains("[\u4e00-\u9fff]"))["_i"].head(30)
    rng = np.random.default_rng(7)
    rand = rng.choice(len(shared_all), 300, replace=False).tolist()
    idx = sorted(set(multi + empty[:20] + cjk.to_list() + rand))
    return shared_all.take(idx)


def test_counts_on_known_text():
    answer = (
        "# Title\n\nI'm sorry, but as an AI I cannot do that.\n\n"
        "- first **bold** item\n- second *italic* item\n1. one\n2) two\n\n"
        "| a | b |\n|---|---|\n\n```python\nx = 1\n```\nUse `x` and see https://example.org "
        "or [docs](http://d.io). $x^2$ \\frac{1}{2} 😀 Привет! 你好？"
    )
    t = make_table([(["What is it? Explain."], [answer], ["ok ok ok ok ok ok"])])
    f = compute_features(t).row(0, named=True)
    assert f["a_headers_all"] == 1
    assert f["a_bullets_all"] == 2 and f["a_numbered_all"] == 2
    assert f["a_bold_all"] == 1 and f["a_italics_all"] == 1
    assert f["a_table_rows_all"] == 2 and f["a_code_blocks_all"] == 1
    assert f["a_inline_code_all"] == 1 and f["a_links_all"] == 2
    assert f["a_latex_all"] == 2 and f["a_emoji_all"] == 1
    assert f["a_refusal_all"] == 1 and f["a_apology_all"] == 1 and f["a_ai_self_all"] == 1
    assert f["a_cyrillic_all"] == 6 and f["a_cjk_all"] == 2
    assert f["a_question_all"] == 1 and f["a_exclaim_all"] == 1
    assert f["a_chars_all"] == len(answer)
    assert f["a_lines_all"] == answer.count("\n") + 1
    # "ok ok ok ok ok ok": 4 word trigrams, all the same -> 3 repeats
    assert f["b_ngram3_all"] == 4 and f["b_rep3_all"] == 3 and f["b_rep3_ratio_all"] == 0.75
    assert f["b_words_all"] == 6 and f["d_words_all"] == f["a_words_all"] - 6
    assert f["lr_chars_all"] == pytest.approx(np.log1p(len(answer)) - np.log1p(17))
    assert f["p_question"] == 1 and f["p_turns"] == 1 and f["p_latin_share"] == 1.0
    assert f["s_identical"] == 0 and f["s_both_empty"] == 0 and f["source"] == "t"


def test_turn_scopes_pair_flags_and_script_mismatch():
    t = make_table([
        (["q1", "q2"], ["short", "a much longer last turn"], ["x", "y"]),
        (["hello"], [""], [" \n "]),
        (["你好，请介绍一下你自己"], ["Hello, I am a bot."], ["你好，我是一个助手。"]),
        (["same"], ["identical text"], ["identical text"]),
    ])
    f = compute_features(t)
    r0, r1, r2, r3 = (f.row(i, named=True) for i in range(4))
    assert r0["a_chars_all"] == 5 + 23 and r0["a_chars_last"] == 23 and r0["p_turns"] == 2
    assert r0["p_chars_last"] == 2 and r0["p_chars"] == 4
    assert r1["a_empty"] == 1 and r1["b_empty"] == 1 and r1["s_both_empty"] == 1
    assert r1["s_jaccard_word"] == 1.0 and r1["s_tfidf_cos"] == 0.0
    assert r2["a_script_mismatch"] == 1.0 and r2["b_script_mismatch"] == 0.0
    assert r2["d_script_mismatch"] == 1.0
    assert r3["s_identical"] == 1 and r3["s_jaccard_char3"] == 1.0
    assert r3["s_tfidf_cos"] == pytest.approx(1.0)


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "polars-alone"])
def test_polars_matches_the_per_row_python_reference(sample, use_kernels):
    fast = compute_features(sample, use_kernels=use_kernels)
    slow = reference_features(sample)
    assert fast.columns == slow.columns == feature_names()
    assert fast["source"].to_list() == slow["source"].to_list()
    for col in fast.columns[1:]:
        np.testing.assert_allclose(fast[col].to_numpy(), slow[col].to_numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=col)


def test_tfidf_cosine_is_sklearns_fitted_on_the_rows_three_texts(sample):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from prefpred.features.patterns import WORD

    sub = sample.take(np.arange(0, len(sample), 25))
    f = compute_features(sub)
    for i, row in enumerate(sub.df.iter_rows(named=True)):
        docs = ["\n".join(row[c]) for c in ("prompt", "response_a", "response_b")]
        try:
            x = TfidfVectorizer(token_pattern=WORD).fit_transform(docs)
        except ValueError:  # no token in any document
            continue
        sims = (x @ x.T).toarray()
        assert f["s_tfidf_cos"][i] == pytest.approx(sims[1, 2], abs=1e-9)
        assert f["a_prompt_cos"][i] == pytest.approx(sims[0, 1], abs=1e-9)
        assert f["b_prompt_cos"][i] == pytest.approx(sims[0, 2], abs=1e-9)


def test_features_are_row_wise_and_ignore_labels(sample):
    full = compute_features(sample)
    # chunking, subsets and labels do not change a row's features
    assert compute_features(sample, chunk_rows=37).equals(full)
    idx = np.arange(5, len(sample), 7)
    assert compute_features(sample.take(idx)).equals(full[idx.tolist()])
    relabelled = sample.with_columns(label=(sample.labels() + 1) % 3, weight=np.full(len(sample), 2.0))
    assert compute_features(relabelled).equals(full)


def test_every_column_is_float_with_a_role(sample):
    f = compute_features(sample.take(np.arange(20)))
    for name, dtype in f.schema.items():
        feature_role(name)  # raises if a column has no swap role
        assert dtype == (pl.String if name == "source" else pl.Float64), name
    assert not f.select(pl.exclude("source")).select(
        pl.any_horizontal(pl.all().is_nan() | pl.all().is_infinite())).to_series().any()


def test_optional_fast_tokenizer_counts(tmp_path):
    from prefpred.testing import tiny_tokenizer

    path = tmp_path / "tokenizer.json"
    tiny_tokenizer().backend_tokenizer.save(str(path))
    config = FeatureConfig(tokenizer=str(path))
    assert config.version != FeatureConfig().version
    t = make_table([(["hi"], ["Which response is better?", "second turn"], ["no"])])
    f = compute_features(t, config)
    ref = reference_features(t, config)
    assert "a_hf_tokens_all" in f.columns and "lr_hf_tokens_last" in f.columns
    assert f["a_hf_tokens_all"][0] > f["a_hf_tokens_last"][0] > 0
    assert f["a_hf_tokens_all"][0] == ref["a_hf_tokens_all"][0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(texts=st.lists(st.one_of(st.none(), st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)),
    min_size=1, max_size=6))
def test_character_trigrams_are_pythons_for_any_text(texts):
    """The vectorised UTF-8 decoding behind the character-trigram Jaccard gives exactly Python's
    characters, for one- to four-byte characters, empty strings and nulls, at any position."""
    from prefpred.features.build import _char_trigrams

    series = pl.Series("t", texts, dtype=pl.String)
    got = _char_trigrams(series[1:] if len(texts) > 1 else series)  # also a sliced column
    for text, grams in zip(texts[1:] if len(texts) > 1 else texts, got.to_list(), strict=True):
        s = text or ""
        want = [(ord(s[i]) << 42) | (ord(s[i + 1]) << 21) | ord(s[i + 2])
                for i in range(len(s) - 2)]
        assert grams == want
