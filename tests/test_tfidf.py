"""The TF-IDF linear model: it learns from words, is exactly swap-symmetric, and runs in cv."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from prefpred.data.table import PreferenceTable
from prefpred.labels import swap_class_columns
from prefpred.models.base import build_model
from prefpred.models.tfidf import TfidfModel
from prefpred.probabilities import softmax

SMALL = {"word_max_features": 2000, "char_max_features": 2000, "max_iter": 200}


def synthetic(n: int, seed: int) -> PreferenceTable:
    """A wins when it says 'excellent' and B says 'terrible', and the other way round; ties
    when both say 'fine'."""
    rng = np.random.default_rng(seed)
    good, bad, meh = "an excellent helpful answer", "a terrible wrong answer", "a fine answer"
    rows = []
    for i in range(n):
        label = int(rng.integers(0, 3))
        a, b = [(good, bad), (bad, good), (meh, meh)][label]
        filler = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"], 3))
        rows.append({"id": str(i), "prompt": [f"question {i}"], "response_a": [f"{a} {filler}"],
                     "response_b": [f"{b} {filler}"], "label": label})
    return PreferenceTable.from_frame(pl.DataFrame(rows), source="synthetic")


def test_learns_from_the_words_and_is_swap_symmetric():
    m = TfidfModel(**SMALL, min_df=1).fit(synthetic(120, 0))
    test = synthetic(60, 1)
    p = softmax(m.predict_logits(test))
    assert (p.argmax(1) == test.labels()).mean() > 0.9
    ps = softmax(m.predict_logits(test.swap()))
    np.testing.assert_allclose(p, swap_class_columns(ps), rtol=0, atol=1e-12)


def test_params_round_trip_through_the_registry():
    m = build_model("tfidf", {"C": 0.2, "word_ngram": [1, 1]})
    params = m.get_params()
    assert params["C"] == 0.2 and params["word_ngram"] == [1, 1]
    assert json.loads(json.dumps(params)) == params
    assert build_model("tfidf", params).get_params() == params


def test_unfitted_model_refuses_to_predict(kaggle_table):
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfModel().predict_logits(kaggle_table.take([0]))


def test_cli_cv_with_tfidf(cli, tmp_path):
    res = cli("cv", "--competition", "pandalm", "--model", "tfidf", "--folds", "2",
              "--run-dir", tmp_path, "--param", "word_max_features=3000",
              "--param", "char_max_features=3000", "--param", "C=0.2")
    assert res.code == 0, res.err
    assert "pandalm" in res.out and "ALL" in res.out
    oof = pl.read_parquet(tmp_path / "pandalm" / "tfidf" / "oof.parquet")
    assert oof.height == 999 and oof["fold"].n_unique() == 2
    assert np.isfinite(oof.select("logit_A", "logit_B", "logit_TIE").to_numpy()).all()


@pytest.mark.parametrize("params,limit", [({"ngram_range": (1, 2)}, 2000),
                                          ({"analyzer": "char_wb", "ngram_range": (3, 5)}, 3000),
                                          ({"ngram_range": (1, 1)}, 10**6)])
def test_fold_vocabularies_equal_scikit_learns(kaggle_table, params, limit):
    """Analysing each text once (NgramCounts) and building each fit's vocabulary from the counts
    gives exactly TfidfVectorizer's terms, idf and matrices, fitted on the same texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from prefpred.models.tfidf import FoldVocabulary, shared_counts

    texts = kaggle_table.df.select(pl.col("response_a").list.join("\n\n").str.slice(0, 4000)
                                   ).to_series().to_list()
    counts = shared_counts(**params)
    counts.counts(texts[500:])  # other texts analysed first: the shared column space grows
    for train, test in ((texts[:400], texts[400:600]), (texts[300:800], texts[:100])):
        ref = TfidfVectorizer(**params, max_features=limit, min_df=2, sublinear_tf=True,
                              dtype=np.float32).fit(train)
        mine = FoldVocabulary(counts, train, limit, 2)
        terms = np.array(list(counts.vocab), dtype=object)[mine.columns]
        assert terms.tolist() == ref.get_feature_names_out().tolist()
        assert np.array_equal(mine.idf, ref.idf_)
        assert abs(mine.transform(counts, test) - ref.transform(test)).max() == 0


def test_each_text_is_analysed_once_across_folds(kaggle_table):
    from prefpred.models.tfidf import shared_counts

    table = kaggle_table.take(np.arange(300))
    m = TfidfModel(**SMALL).fit(table.take(np.arange(200)))
    counts = shared_counts(analyzer="char_wb", ngram_range=(3, 5))
    m.predict_logits(table.take(np.arange(200, 300)))
    analysed = len(counts.rows)
    TfidfModel(**SMALL).fit(table.take(np.arange(100, 300))).predict_logits(
        table.take(np.arange(100)))
    assert len(counts.rows) == analysed  # the second fold analysed nothing new
