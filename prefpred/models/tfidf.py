"""TF-IDF of each response (word and character n-grams) and a linear multinomial model.

The design rows are ``[X_A, X_B, X_A - X_B]`` (plus a one-hot of the source), where ``X`` is the
word and character n-gram TF-IDF of a response (all turns joined). Training sees every pair and
its swap and prediction averages the pair and its swap, so the model is swap-symmetric. A public
TF-IDF baseline of this kind scored about 1.036 on the LMSYS leaderboard.

Speed without changing the model: the expensive part of scikit-learn's ``TfidfVectorizer`` is
analysing each text into n-grams, in Python. :class:`NgramCounts` does that once per distinct
text per process and keeps the counts in one growing column space, so the folds of a
cross-validation (and the refit) never analyse a text twice. Each fit still builds its own
vocabulary and idf from its own training texts only, exactly as ``TfidfVectorizer(max_features,
min_df, sublinear_tf=True, dtype=float32)`` would (same alphabetical order, same frequency
limit, same smoothed idf; a test checks the matrices against scikit-learn's). A pair and its swap
share their texts: transforming the swap costs a lookup, not another analysis.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.labels import N_CLASSES
from prefpred.models.base import swap_averaged_logits
from prefpred.models.logistic import fit_softmax_regression
from prefpred.registry import Positive, PositiveFloat, constructor_params
from prefpred.targets import Targets


class NgramCounts:
    """N-gram counts of texts in one column space shared by every text analysed so far.

    ``analyzer`` is a scikit-learn analyzer (text -> list of n-grams). Each distinct text is
    analysed once; :meth:`counts` returns a CSR matrix (texts x terms so far, float32).
    """

    def __init__(self, analyzer) -> None:
        self.analyzer = analyzer
        self.vocab: dict[str, int] = {}
        self.rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._rank: np.ndarray | None = None
        self._lock = threading.Lock()

    def counts(self, texts: Sequence[str]):
        from scipy import sparse

        with self._lock:
            for text in dict.fromkeys(texts):
                if text not in self.rows:
                    self.rows[text] = self._analyse(text)
            cols = [self.rows[t][0] for t in texts]
            vals = [self.rows[t][1] for t in texts]
            n_terms = len(self.vocab)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in cols], out=indptr[1:])
        indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
        data = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float32)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(texts), n_terms))

    def _analyse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        counts: dict[int, int] = {}
        vocab = self.vocab
        for gram in self.analyzer(text):
            j = vocab.get(gram)
            if j is None:
                j = vocab[gram] = len(vocab)
            counts[j] = counts.get(j, 0) + 1
        self._rank = None
        cols = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        vals = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        order = np.argsort(cols)
        return cols[order], vals[order]

    def alphabetical_rank(self) -> np.ndarray:
        """Each term's position in the alphabetical order of all terms so far."""
        with self._lock:
            if self._rank is None or len(self._rank) != len(self.vocab):
                terms = np.array(list(self.vocab), dtype=object)
                rank = np.empty(len(terms), dtype=np.int64)
                rank[np.argsort(terms, kind="stable")] = np.arange(len(terms))
                self._rank = rank
            return self._rank


_COUNTS: dict[tuple, NgramCounts] = {}
_COUNTS_LOCK = threading.Lock()


def shared_counts(**analyzer_params: Any) -> NgramCounts:
    """One :class:`NgramCounts` per analyzer configuration in this process."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    key = tuple(sorted(analyzer_params.items()))
    with _COUNTS_LOCK:
        if key not in _COUNTS:
            _COUNTS[key] = NgramCounts(TfidfVectorizer(**analyzer_params).build_analyzer())
        return _COUNTS[key]


class FoldVocabulary:
    """What ``TfidfVectorizer(max_features, min_df, sublinear_tf=True, dtype=float32)`` learns
    from a corpus: the kept terms (alphabetical) and their smoothed idf."""

    def __init__(self, counts: NgramCounts, corpus: Sequence[str], max_features: int,
                 min_df: int) -> None:
        x = counts.counts(corpus).tocsc()
        present = np.flatnonzero(np.diff(x.indptr))
        rank = counts.alphabetical_rank()
        ordered = present[np.argsort(rank[present], kind="stable")]  # sklearn sorts terms
        x = x[:, ordered]
        dfs = np.diff(x.indptr)
        mask = dfs >= min_df
        if mask.sum() > max_features:
            tfs = np.asarray(x.sum(axis=0)).ravel()
            keep = np.zeros(len(dfs), dtype=bool)
            keep[np.flatnonzero(mask)[(-tfs[mask]).argsort()[:max_features]]] = True
            mask = keep
        if not mask.any():
            from prefpred.errors import DataError

            raise DataError(f"no term occurs in {min_df} training texts (min_df); lower min_df")
        self.columns = ordered[mask]  # global term ids, in vocabulary order
        df = dfs[mask].astype(np.float32) + 1.0
        idf = np.full_like(df, fill_value=len(corpus) + 1, dtype=np.float32)
        idf /= df
        np.log(idf, out=idf)
        self.idf = idf + np.float32(1.0)

    @classmethod
    def from_terms(cls, counts: NgramCounts, terms: Sequence[str], idf: np.ndarray
                   ) -> FoldVocabulary:
        """A saved vocabulary (terms in order, their idf) in this process's column space."""
        vocab = cls.__new__(cls)
        idf = np.asarray(idf, dtype=np.float32)
        if len(terms) != len(idf) or not np.isfinite(idf).all() or (idf < 1).any():
            raise ValueError("a vocabulary needs one idf >= 1 per term")
        with counts._lock:
            columns = [counts.vocab.setdefault(t, len(counts.vocab)) for t in terms]
            counts._rank = None
        vocab.columns = np.asarray(columns, dtype=np.int64)
        vocab.idf = idf
        return vocab

    def terms(self, counts: NgramCounts) -> list[str]:
        names = list(counts.vocab)
        return [names[j] for j in self.columns]

    def transform(self, counts: NgramCounts, texts: Sequence[str]):
        """Sublinear TF-IDF rows of ``texts``, L2-normalised, in this vocabulary."""
        from sklearn.preprocessing import normalize

        x = counts.counts(texts)
        x.resize(x.shape[0], len(counts.vocab))
        x = x[:, self.columns].tocsr()
        np.log(x.data, x.data)
        x.data += np.float32(1.0)
        x.data *= self.idf[x.indices]
        return normalize(x, norm="l2", copy=False)


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
        self.vocabularies_: list[FoldVocabulary] | None = None
        self.sources_: list[str] | None = None
        self.clf_ = None

    def get_params(self) -> dict[str, Any]:
        return constructor_params(self)

    def _analysers(self) -> list[tuple[NgramCounts, int]]:
        return [(shared_counts(ngram_range=self.word_ngram), self.word_max_features),
                (shared_counts(analyzer="char_wb", ngram_range=self.char_ngram),
                 self.char_max_features)]

    def _texts(self, table: PreferenceTable, column: str) -> list[str]:
        return (table.df.select(pl.col(column).list.join("\n\n").str.slice(0, self.max_chars))
                .to_series().to_list())

    def _responses(self, table: PreferenceTable):
        """The TF-IDF rows of response A and of response B (the vocabularies' columns side by
        side)."""
        from scipy import sparse

        out = []
        for column in ("response_a", "response_b"):
            texts = self._texts(table, column)
            out.append(sparse.hstack([vocab.transform(counts, texts) for vocab, (counts, _)
                                      in zip(self.vocabularies_, self._analysers(), strict=True)]
                                     ).tocsr())
        return out

    def _design(self, table: PreferenceTable):
        from scipy import sparse

        xa, xb = self._responses(table)
        sources = table.column("source").to_list()
        blocks = [xa, xb, xa - xb]
        if self.use_source:
            index = {s: i for i, s in enumerate(self.sources_)}
            rows = [i for i, s in enumerate(sources) if s in index]
            cols = [index[sources[i]] for i in rows]
            blocks.append(sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                            shape=(len(sources), len(self.sources_))))
        return sparse.hstack(blocks).tocsr()

    def fit(self, table: PreferenceTable) -> TfidfModel:
        from sklearn.linear_model import LogisticRegression

        from prefpred.errors import DataError

        table.require_labels("TF-IDF training")
        corpus = self._texts(table, "response_a") + self._texts(table, "response_b")
        self.vocabularies_ = [FoldVocabulary(counts, corpus, limit, self.min_df)
                              for counts, limit in self._analysers()]
        self.sources_ = sorted(table.column("source").unique().to_list())
        train = table.with_swapped() if self.swap_augment else table
        targets = Targets.from_table(train, what="TF-IDF training")
        self.clf_ = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4)
        if targets.is_hard:
            self.clf_.fit(self._design(train), train.require_labels("TF-IDF training"),
                          sample_weight=train.weights())
            if list(self.clf_.classes_) != list(range(N_CLASSES)):
                raise DataError(f"TF-IDF training needs all three classes; got "
                                f"{self.clf_.classes_}", file=table.origin, column="label")
        else:  # soft targets or two-class rows: the same regression, on target distributions
            design = self._design(train)
            coef, intercept = fit_softmax_regression(design, targets, C=self.C,
                                                     max_iter=self.max_iter)
            self.clf_.coef_, self.clf_.intercept_ = coef, intercept
            self.clf_.classes_ = np.arange(N_CLASSES)
            self.clf_.n_features_in_ = design.shape[1]
        return self

    def save_state(self, folder) -> None:
        import json

        if self.clf_ is None:
            raise RuntimeError("TfidfModel is not fitted")
        analysers = self._analysers()
        (folder / "vocabularies.json").write_text(json.dumps(
            [vocab.terms(counts) for vocab, (counts, _) in
             zip(self.vocabularies_, analysers, strict=True)], ensure_ascii=False),
            encoding="utf-8")
        np.savez(folder / "weights.npz", coef=self.clf_.coef_, intercept=self.clf_.intercept_,
                 **{f"idf{i}": v.idf for i, v in enumerate(self.vocabularies_)})
        (folder / "sources.json").write_text(json.dumps(self.sources_))

    def load_state(self, folder) -> None:
        import json

        from sklearn.linear_model import LogisticRegression

        terms = json.loads((folder / "vocabularies.json").read_text(encoding="utf-8"))
        sources = json.loads((folder / "sources.json").read_text(encoding="utf-8"))
        with np.load(folder / "weights.npz") as z:
            weights = {k: z[k] for k in z.files}
        analysers = self._analysers()
        if len(terms) != len(analysers) or not all(
                isinstance(t, list) and all(isinstance(x, str) for x in t) for t in terms):
            raise ValueError(f"vocabularies.json must hold {len(analysers)} lists of terms")
        self.vocabularies_ = [FoldVocabulary.from_terms(counts, t, weights[f"idf{i}"])
                              for i, (t, (counts, _)) in enumerate(zip(terms, analysers,
                                                                       strict=True))]
        self.sources_ = [str(s) for s in sources]
        width = 3 * sum(len(t) for t in terms) + (len(self.sources_) if self.use_source else 0)
        coef, intercept = weights["coef"], weights["intercept"]
        if coef.shape != (N_CLASSES, width) or intercept.shape != (N_CLASSES,) or \
                not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ValueError(f"the weights must be finite, of shape ({N_CLASSES}, {width})")
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4)
        clf.coef_, clf.intercept_ = coef, intercept
        clf.classes_ = np.arange(N_CLASSES)
        clf.n_features_in_ = width
        self.clf_ = clf

    def _raw_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.clf_ is None:
            raise RuntimeError("TfidfModel is not fitted")
        scores = np.asarray(self.clf_.decision_function(self._design(table)), dtype=np.float64)
        return scores.reshape(len(table), N_CLASSES)

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.swap_average:
            return swap_averaged_logits(self._raw_logits, table)
        return self._raw_logits(table)
