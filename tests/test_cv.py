import json

import numpy as np
import polars as pl

from prefpred.data.folds import assign_folds
from prefpred.labels import LOGIT_COLUMNS
from prefpred.metrics import log_loss
from prefpred.models.base import build_model, swap_averaged_logits
from prefpred.models.prior import ClassPrior
from prefpred.probabilities import softmax
from prefpred.stages import run_cv


class CountingPrior(ClassPrior):
    fits = 0

    def fit(self, table):
        CountingPrior.fits += 1
        return super().fit(table)


def test_prior_oof_matches_a_hand_computed_prior(kaggle_table, tmp_path):
    res = run_cv(kaggle_table, lambda: ClassPrior(smoothing=0), name="prior", n_folds=5, seed=1,
                 run_dir=tmp_path, progress=False)
    y = kaggle_table.labels()
    folds = assign_folds(kaggle_table, 5, 1)
    expected = np.zeros((len(y), 3))
    for k in range(5):
        counts = np.bincount(y[folds != k], minlength=3).astype(float)
        counts[:2] = counts[:2].mean()
        expected[folds == k] = counts / counts.sum()
    assert np.allclose(softmax(res.oof_logits), expected)
    assert res.log_loss == log_loss(y, expected)
    oof = pl.read_parquet(tmp_path / "prior" / "oof.parquet")
    assert oof.columns == ["id", "source", "fold", "label", *LOGIT_COLUMNS]
    assert oof["id"].to_list() == kaggle_table.ids
    scores = json.loads((tmp_path / "prior" / "scores.json").read_text())
    assert scores["scores"][-1]["group"] == "ALL"


def test_cv_resumes_finished_folds(kaggle_table, tmp_path):
    CountingPrior.fits = 0
    first = run_cv(kaggle_table, CountingPrior, name="p", run_dir=tmp_path, progress=False)
    assert CountingPrior.fits == 5
    (tmp_path / "p" / "fold_3.parquet").unlink()  # as if interrupted during fold 3
    second = run_cv(kaggle_table, CountingPrior, name="p", run_dir=tmp_path, progress=False)
    assert CountingPrior.fits == 6
    assert np.allclose(first.oof_logits, second.oof_logits)
    # other parameters: nothing is reused
    run_cv(kaggle_table, lambda: CountingPrior(smoothing=5), name="p", run_dir=tmp_path,
           progress=False)
    assert CountingPrior.fits == 11


def test_only_folds(kaggle_table):
    res = run_cv(kaggle_table, ClassPrior, name="p", only_folds=[0], progress=False)
    done = ~np.isnan(res.oof_logits).any(1)
    assert done.sum() == (res.folds == 0).sum()
    assert int(res.scores["rows"][-1]) == done.sum()


def test_swap_averaging_is_exactly_symmetric(kaggle_table):
    class Biased:
        def predict_logits(self, table):
            n = table.df["response_a"].list.join(" ").str.len_chars().to_numpy()
            return np.stack([np.log1p(n), np.zeros(len(n)), np.ones(len(n)) * 0.3], 1)

    m = Biased()
    t = kaggle_table.take(np.arange(50))
    p = softmax(swap_averaged_logits(m.predict_logits, t))
    ps = softmax(swap_averaged_logits(m.predict_logits, t.swap()))
    assert np.allclose(p[:, 0], ps[:, 1]) and np.allclose(p[:, 2], ps[:, 2])


def test_registry_rejects_unknown_model_and_params():
    import pytest

    from prefpred.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model"):
        build_model("nope")
    with pytest.raises(ConfigError, match="prior"):
        build_model("prior", {"bogus": 1})
