"""TF-IDF of each response (word and character n-grams) and a linear multinomial model.

The design rows are ``[X_A, X_B, X_A - X_B]`` (plus a one-hot of the source), where ``X`` is the
word and character n-gram TF-IDF of a response (all turns joined). Training sees every pair and
its swap (``table.with_swapped()``) and prediction averages the pair and its swap
(:func:`prefpred.models.base.swap_averaged_logits`), so the model is swap-symmetric. A public
TF-IDF baseline of this kind scored about 1.036 on the LMSYS leaderboard.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.labels import N_CLASSES
from prefpred.models.base import swap_averaged_logits
from prefpred.registry import Positive, PositiveFloat, constructor_params


class TfidfModel:
    """Word (``word_ngram``) and character (``char_ngram``, within word boundaries) TF-IDF,
    ``max_features`` each, sublinear term frequencies, on texts cut to ``max_chars``; an L2
    multinomial logistic regression with inverse strength ``C``. Emits the regression's logits.
    """

    def __init__(
        self,
        word_ngram: tuple[int, int] | list[int] = (1, 2),
        char_ngram: tuple[int, int] | list[int] = (3, 5),
        word_max_features: Positive = 10_000,
        char_max_features: Positive = 10_000,
        min_df: Positive = 2,
        max_chars: Positive = 4000,
        C: PositiveFloat = 0.1,
        max_iter: Positive = 300,
        use_source: bool = True,
        swap_augment: bool = True,
        swap_average: bool = True,
    ):
        self.word_ngram = tuple(word_ngram)
        self.char_ngram = tuple(char_ngram)
        self.word_max_features = word_max_features
        self.char_max_features = char_max_features
        self.min_df = min_df
        self.max_chars = max_chars
        self.C = C
        self.max_iter = max_iter
        self.use_source = use_source
        self.swap_augment = swap_augment
        self.swap_average = swap_average
        self.vectorizers_: list | None = None
        self.sources_: list[str] | None = None
        self.clf_ = None

    def get_params(self) -> dict[str, Any]:
        return constructor_params(self)

    def _texts(self, table: PreferenceTable, column: str) -> list[str]:
        return (table.df.select(pl.col(column).list.join("\n\n").str.slice(0, self.max_chars))
                .to_series().to_list())

    def _design(self, table: PreferenceTable):
        from scipy import sparse

        assert self.vectorizers_ is not None and self.sources_ is not None
        xa = sparse.hstack([v.transform(self._texts(table, "response_a"))
                            for v in self.vectorizers_]).tocsr()
        xb = sparse.hstack([v.transform(self._texts(table, "response_b"))
                            for v in self.vectorizers_]).tocsr()
        blocks = [xa, xb, xa - xb]
        if self.use_source:
            src = table.column("source").to_list()
            index = {s: i for i, s in enumerate(self.sources_)}
            rows = [i for i, s in enumerate(src) if s in index]
            cols = [index[src[i]] for i in rows]
            blocks.append(sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                            shape=(len(src), len(self.sources_))))
        return sparse.hstack(blocks).tocsr()

    def fit(self, table: PreferenceTable) -> TfidfModel:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        table.require_labels("TF-IDF training")
        train = table.with_swapped() if self.swap_augment else table
        corpus = self._texts(table, "response_a") + self._texts(table, "response_b")
        self.vectorizers_ = [
            TfidfVectorizer(ngram_range=self.word_ngram, max_features=self.word_max_features,
                            min_df=self.min_df, sublinear_tf=True, dtype=np.float32),
            TfidfVectorizer(analyzer="char_wb", ngram_range=self.char_ngram,
                            max_features=self.char_max_features, min_df=self.min_df,
                            sublinear_tf=True, dtype=np.float32),
        ]
        for v in self.vectorizers_:
            v.fit(corpus)
        self.sources_ = sorted(table.column("source").unique().to_list())
        y = train.require_labels("TF-IDF training")
        self.clf_ = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4)
        self.clf_.fit(self._design(train), y, sample_weight=train.weights())
        if list(self.clf_.classes_) != list(range(N_CLASSES)):
            from prefpred.errors import DataError

            raise DataError(f"TF-IDF training needs all three classes; got {self.clf_.classes_}",
                            file=table.origin, column="label")
        return self

    def _raw_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.clf_ is None:
            raise RuntimeError("TfidfModel is not fitted")
        scores = np.asarray(self.clf_.decision_function(self._design(table)), dtype=np.float64)
        return scores.reshape(len(table), N_CLASSES)

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.swap_average:
            return swap_averaged_logits(self._raw_logits, table)
        return self._raw_logits(table)
