"""A LightGBM multiclass model on the polars feature library, symmetric in A and B.

Training sees every pair twice (``table.with_swapped()``), prediction averages the pair and its
swap (:func:`prefpred.models.base.swap_averaged_logits`), so P(A | x) = P(B | swap(x)) exactly.
Early stopping watches an inner validation split of the training table, grouped by prompt (the
held-out fold of a cross-validation is never seen). Sample weights are the table's weights.
"""

from __future__ import annotations

import os

# LightGBM's OpenMP threads busy-wait between parallel regions by default; on a machine whose
# cores are shared (another job, a second tuning worker) that makes training many times slower.
# Waiting passively costs nothing measurable when the cores are free. Read once, when LightGBM
# is first loaded, so it is set here before any ``import lightgbm``; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
from pydantic import Field

from prefpred.data.folds import canonical_order, fold_split, split_folds
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.features import FeatureConfig
from prefpred.features.cache import FeatureStore, shared_store
from prefpred.features.sets import select_features
from prefpred.io import atomic_path, write_json_atomic, write_text_atomic
from prefpred.labels import N_CLASSES
from prefpred.models.base import swap_averaged_logits
from prefpred.registry import (
    Fraction,
    NonNegative,
    OpenFraction,
    Positive,
    PositiveFloat,
    constructor_params,
)
from prefpred.targets import Targets, expand_rows


def inner_split(table: PreferenceTable, fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) row indices: about ``fraction`` of the prompt groups held out, stratified
    by label, grouped by ``group`` (so no prompt is on both sides). Deterministic per seed."""
    n_splits = max(2, round(1.0 / fraction))
    groups = table.groups()
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ConfigError(f"only {n_groups} prompt groups: too few for an inner validation "
                          f"split of {fraction:.2f}; set early_stopping_rounds=0")
    folds = split_folds(table.labels(), groups, n_splits, seed,
                        order=canonical_order(groups, table.ids))
    return fold_split(folds, 0)


class LightGBMModel:
    """Multiclass LightGBM on :mod:`prefpred.features`; emits logits (n, 3) in (A, B, TIE).

    Tree parameters are LightGBM's (``num_leaves``, ``min_child_samples``, ...).
    ``n_estimators`` is the most boosting rounds; with ``early_stopping_rounds > 0`` training
    stops when the inner validation log loss (``valid_fraction`` of the prompt groups) has not
    improved for that many rounds, and with ``refit=True`` the model is then refitted on all
    training rows for the best number of rounds scaled by ``1 / (1 - valid_fraction)``.
    ``feature_set`` picks columns (see :mod:`prefpred.features.sets`); ``use_source`` adds the
    row's source as a categorical. ``feature_cache`` is a feature cache folder read before
    computing (``prefpred features build`` writes it); None or "" computes everything.
    """

    #: Parameters that name where the model writes: a saved model loads without them.
    WRITE_PARAMS = ("feature_cache",)

    def __init__(
        self,
        n_estimators: Positive = 2000,
        learning_rate: PositiveFloat = 0.03,
        num_leaves: Annotated[int, Field(ge=2)] = 15,
        max_depth: int = -1,
        min_child_samples: Positive = 40,
        min_split_gain: NonNegative = 0.0,
        feature_fraction: Fraction = 0.5,
        bagging_fraction: Fraction = 0.8,
        bagging_freq: Annotated[int, Field(ge=0)] = 1,
        lambda_l1: NonNegative = 0.0,
        lambda_l2: NonNegative = 1.0,
        cat_smooth: NonNegative = 10.0,
        max_bin: Annotated[int, Field(ge=2)] = 255,
        early_stopping_rounds: Annotated[int, Field(ge=0)] = 100,
        valid_fraction: OpenFraction = 0.15,
        refit: bool = False,
        swap_augment: bool = True,
        swap_average: bool = True,
        use_source: bool = True,
        feature_set: str = "all",
        tokenizer: str | None = None,
        feature_cache: str | None = "features",
        seed: Annotated[int, Field(ge=0)] = 0,
        num_threads: Annotated[int, Field(ge=0)] = 2,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.min_split_gain = min_split_gain
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.lambda_l1 = lambda_l1
        self.lambda_l2 = lambda_l2
        self.cat_smooth = cat_smooth
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_fraction = valid_fraction
        self.refit = refit
        self.swap_augment = swap_augment
        self.swap_average = swap_average
        self.use_source = use_source
        self.feature_set = feature_set
        self.tokenizer = tokenizer
        self.feature_cache = feature_cache or None  # "" (e.g. from --param) disables it
        self.seed = seed
        self.num_threads = num_threads
        select_features([], feature_set)  # unknown set names fail at construction
        self.booster_ = None
        self.best_iteration_: int | None = None
        self.columns_: list[str] | None = None
        self.sources_: list[str] | None = None
        self.work_dir: Path | None = None

    # ------------------------------------------------------------------ protocol
    def get_params(self) -> dict[str, Any]:
        return constructor_params(self)

    def set_work_dir(self, path: Path) -> None:
        self.work_dir = Path(path)

    def _store(self) -> FeatureStore:
        return shared_store(FeatureConfig(tokenizer=self.tokenizer), self.feature_cache)

    def precompute_features(self, table: PreferenceTable, progress: bool = False) -> None:
        """Compute (or read from the cache) the features of ``table`` and of its swapped pairs
        now, so that later fits and predictions on any of its rows only look them up."""
        self._store().features(table.with_swapped(), progress=progress)

    def lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "multiclass", "num_class": N_CLASSES, "metric": "multi_logloss",
            "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "max_depth": self.max_depth, "min_child_samples": self.min_child_samples,
            "min_split_gain": self.min_split_gain, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": self.bagging_freq,
            "lambda_l1": self.lambda_l1, "lambda_l2": self.lambda_l2,
            "cat_smooth": self.cat_smooth, "max_bin": self.max_bin,
            "seed": self.seed, "num_threads": self.num_threads, "deterministic": True,
            "force_col_wise": True, "verbosity": -1,
        }

    def _matrix(self, table: PreferenceTable) -> np.ndarray:
        feats = self._store().features(table)
        if self.columns_ is None:
            raise RuntimeError("LightGBMModel is not fitted")
        numeric = [c for c in self.columns_ if c != "source"]
        x = feats.select(numeric).to_numpy().astype(np.float64)
        if self.use_source:
            assert self.sources_ is not None
            codes = feats.select(
                pl.col("source").replace_strict(self.sources_, range(len(self.sources_)),
                                                default=None, return_dtype=pl.Float64)
            ).to_series().fill_null(np.nan).to_numpy()
            x = np.column_stack([x, codes])
        return x

    def _dataset(self, table: PreferenceTable, reference=None):
        """A LightGBM data set; soft targets enter by row expansion (each row once per class
        with a positive target, weighted by it: the expected log loss, exactly)."""
        import lightgbm as lgb

        names = [c for c in self.columns_ if c != "source"] + (["source"] if self.use_source
                                                                 else [])
        matrix = self._matrix(table)
        targets = Targets.from_table(table, what="LightGBM training")
        if targets.is_hard:
            label, weight = targets.probs.argmax(1), targets.weight
        else:
            rows, label, weight = expand_rows(targets)
            matrix = matrix[rows]
        return lgb.Dataset(
            matrix, label=label, weight=weight, feature_name=names,
            categorical_feature=["source"] if self.use_source else "auto",
            reference=reference, free_raw_data=True,
        )

    def fit(self, table: PreferenceTable,
            callbacks: Sequence[Callable] | None = None) -> LightGBMModel:
        """Fit on ``table``. ``callbacks`` go to ``lightgbm.train`` (e.g. Optuna's pruning
        callback, which reads the inner validation set named ``valid``)."""
        import lightgbm as lgb

        table.require_labels("LightGBM training")
        # LightGBM's multiclass objective has no restricted softmax: pairs judged without a tie
        # option are left out (the TF-IDF, logistic and backbone models use them)
        two_class = ~table.tie_allowed()
        self.dropped_two_class_ = int(two_class.sum())
        if two_class.all():
            raise DataError("LightGBM cannot train on pairs judged without a tie option only",
                            file=table.origin, column="tie_allowed",
                            fix="use --model tfidf or backbone for two-class data")
        if two_class.any():
            from prefpred.errors import notice

            notice("LightGBM leaves out the pairs judged without a tie option (its multiclass "
                   "objective has no two-class form); the TF-IDF, logistic and backbone models "
                   "train on them")
            table = table.filter(~two_class)
        self.columns_ = select_features(self._feature_names(), self.feature_set)
        self.sources_ = sorted(table.column("source").unique().to_list())
        params = self.lgb_params()
        aug = (lambda t: t.with_swapped()) if self.swap_augment else (lambda t: t)
        best_score = None
        if self.early_stopping_rounds > 0:
            train_idx, valid_idx = inner_split(table, self.valid_fraction, self.seed)
            train, valid = aug(table.take(train_idx)), aug(table.take(valid_idx))
            dtrain = self._dataset(train)
            dvalid = self._dataset(valid, reference=dtrain)
            booster = lgb.train(
                params, dtrain, num_boost_round=self.n_estimators, valid_sets=[dvalid],
                valid_names=["valid"],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False),
                           *(callbacks or [])],
            )
            self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
            best_score = float(booster.best_score["valid"]["multi_logloss"])
            if self.refit:
                rounds = max(1, round(self.best_iteration_ / (1.0 - self.valid_fraction)))
                booster = lgb.train(params, self._dataset(aug(table)), num_boost_round=rounds)
                self.best_iteration_ = rounds
        else:
            booster = lgb.train(params, self._dataset(aug(table)),
                                num_boost_round=self.n_estimators, callbacks=list(callbacks or []))
            self.best_iteration_ = self.n_estimators
        self.booster_ = booster
        self.inner_valid_logloss_ = best_score
        if self.work_dir is not None:
            self._save(self.work_dir)
        return self

    def _feature_names(self) -> list[str]:
        from prefpred.features import feature_names

        return feature_names(FeatureConfig(tokenizer=self.tokenizer))

    def _raw_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.booster_ is None:
            raise RuntimeError("LightGBMModel is not fitted")
        raw = self.booster_.predict(self._matrix(table), raw_score=True,
                                    num_iteration=self.best_iteration_)
        return np.asarray(raw, dtype=np.float64).reshape(len(table), N_CLASSES)

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        if self.swap_average:
            return swap_averaged_logits(self._raw_logits, table)
        return self._raw_logits(table)

    # ------------------------------------------------------------------ saved state
    def save_state(self, folder: Path) -> None:
        if self.booster_ is None:
            raise RuntimeError("LightGBMModel is not fitted")
        write_text_atomic(folder / "booster.txt",
                          self.booster_.model_to_string(num_iteration=self.best_iteration_))
        write_json_atomic(folder / "state.json", {
            "columns": self.columns_, "sources": self.sources_,
            "best_iteration": self.best_iteration_,
            "inner_valid_logloss": self.inner_valid_logloss_})

    def load_state(self, folder: Path) -> None:
        import json

        import lightgbm as lgb

        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        columns, sources = state["columns"], state["sources"]
        if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)
                and isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
            raise ValueError("columns and sources must be lists of names")
        unknown = sorted(set(columns) - set(self._feature_names()))
        if unknown:
            raise ValueError(f"features {unknown[:3]} are not features of this prefpred")
        try:
            booster = lgb.Booster(model_file=str(folder / "booster.txt"))
        except Exception as err:  # noqa: BLE001 - LightGBM's own error type for a bad file
            raise ValueError(f"booster.txt is not a LightGBM model ({err})") from None
        numeric = [c for c in columns if c != "source"]
        if booster.num_feature() != len(numeric) + int(self.use_source) or \
                booster.num_model_per_iteration() != N_CLASSES:
            raise ValueError("booster.txt does not fit the saved feature columns")
        self.booster_, self.columns_, self.sources_ = booster, columns, sources
        self.best_iteration_ = int(state["best_iteration"])
        self.inner_valid_logloss_ = state.get("inner_valid_logloss")

    # ------------------------------------------------------------------ artefacts
    def feature_importance(self) -> pl.DataFrame:
        """Gain and split count per feature, by gain (descending)."""
        if self.booster_ is None:
            raise RuntimeError("LightGBMModel is not fitted")
        return pl.DataFrame({
            "feature": self.booster_.feature_name(),
            "gain": self.booster_.feature_importance("gain", iteration=self.best_iteration_),
            "split": self.booster_.feature_importance("split", iteration=self.best_iteration_),
        }).sort(["gain", "feature"], descending=[True, False])

    def _save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "importance.csv") as tmp:
            self.feature_importance().write_csv(tmp)
        write_text_atomic(folder / "model.txt",
                          self.booster_.model_to_string(num_iteration=self.best_iteration_))
        write_json_atomic(folder / "fit.json", {
            "params": self.get_params(), "best_iteration": self.best_iteration_,
            "inner_valid_logloss": self.inner_valid_logloss_, "sources": self.sources_,
            "n_features": len(self.booster_.feature_name()),
        })


__all__ = ["LightGBMModel", "inner_split"]
