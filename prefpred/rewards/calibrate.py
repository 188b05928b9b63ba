"""Fit, choose, save and apply a tie-aware calibrator for reward scores (the CLI's library side).

``fit_reward_calibration`` compares the tie models by out-of-fold log loss (folds grouped by the
scores file's ``group`` column when it has one), refits every model on all rows, and writes a
model folder::

    DIR/calibrator.json        the chosen model (lowest out-of-fold log loss, or the one asked for)
    DIR/<model>.json           every fitted model, so another can be applied by name
    DIR/report.json            out-of-fold scores of each model and of the baselines
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.errors import ConfigError, DataError, notice
from prefpred.io import atomic_paths
from prefpred.labels import TIE
from prefpred.metrics import score
from prefpred.probabilities import softmax
from prefpred.rewards.io import RewardScores
from prefpred.rewards.models import (
    TIE_MODELS,
    MultinomialTie,
    TieModel,
    load_tie_model,
    make_tie_model,
    oof_tie_scores,
    reward_folds,
    tie_model_params,
)

CALIBRATOR_FILE = "calibrator.json"
#: The comparison row of a ``--init-from`` reward model's own tie likelihood, not refitted.
AS_TRAINED = "as-trained"
REPORT_FILE = "report.json"


@dataclass
class RewardCalibration:
    chosen: str
    model: TieModel
    scores: pl.DataFrame  # one row per candidate: out-of-fold log loss, accuracy, ECE
    out_dir: Path | None


def fit_reward_calibration(
    scores: RewardScores,
    out_dir: str | Path | None = None,
    *,
    model: str = "auto",
    candidates: Sequence[str] = tuple(TIE_MODELS),
    n_folds: int = 5,
    seed: int = 0,
    position_bias: bool = True,
    tie_rate: float | None = None,
    init_from: str | Path | None = None,
) -> RewardCalibration:
    """Compare tie models out of fold, refit them on all rows, save them, return the chosen one.

    ``model='auto'`` picks the candidate with the lowest out-of-fold log loss; a model name
    fits and keeps only that one (the comparison table still lists the baselines).
    ``tie_rate`` fixes P(TIE) at equal rewards instead of learning it (needed when the labels
    have no ties; the multinomial model, which learns its tie odds, is then left out).
    ``init_from``: a reward model folder written by ``prefpred train-reward`` with a tie-aware
    loss: its tie model starts from the trained parameters (scale 1, no position bias, the
    learned tie parameter), the trained model as it is joins the comparison (``as-trained``),
    and labels without ties take the trained tie rate.
    """
    if scores.y is None:
        raise DataError("no labels to fit on", file=scores.file, column="label")
    trained = _trained_tie_model(init_from) if init_from is not None else None
    if trained is not None and tie_rate is None and not (scores.y == TIE).any():
        tie_rate = trained["rate"]
        notice(f"no ties among the labels: P(tie) at equal rewards is fixed at {tie_rate:.4g}, "
               f"the rate {init_from} was trained with")
    if model != "auto":
        if model not in TIE_MODELS:
            raise ConfigError(f"unknown tie model {model!r}; choose auto or one of "
                              f"{sorted(TIE_MODELS)}")
        candidates = [model]
    elif tie_rate is not None:
        candidates = [c for c in candidates if c != MultinomialTie.name]
    if scores.feature_names and MultinomialTie.name not in candidates:
        raise ConfigError("features are used by the multinomial model only; add it to the "
                          "candidates or drop the features")
    y = scores.y
    folds = reward_folds(y, scores.groups, n_folds, seed)
    oof = oof_tie_scores(scores.margin, y, folds, models=candidates, features=scores.features,
                         feature_names=scores.feature_names, position_bias=position_bias,
                         sample_weight=scores.weights, tie_rate=tie_rate)
    if trained is not None:  # the trained likelihood as it is: what calibration adds to it
        oof[AS_TRAINED] = {"logits": trained["model"].predict_logits(scores.margin)}
    rows = []
    for name, res in oof.items():
        s = score(y, softmax(res["logits"]))
        rows.append({"model": name, "oof_log_loss": s["log_loss"], "accuracy": s["accuracy"],
                     "ece": s["ece"], "tie_model": name in TIE_MODELS})
    table = pl.DataFrame(rows)
    ranked = table.filter(pl.col("tie_model")).sort("oof_log_loss")
    chosen = str(ranked["model"][0])
    fitted: dict[str, TieModel] = {}
    for name in candidates:
        params = tie_model_params(name, position_bias=position_bias,
                                  feature_names=scores.feature_names, tie_rate=tie_rate)
        fitted[name] = make_tie_model(name, **params)
        start = ({"init": trained["model"].coef_}
                 if trained is not None and trained["model"].name == name else {})
        fitted[name].fit(scores.margin, y, scores.weights,
                         scores.features if "features" in params else None, **start)
    table = table.with_columns((pl.col("model") == chosen).alias("chosen")).drop("tie_model")
    if out_dir is not None:
        out = Path(out_dir)
        meta = {"scores_file": str(scores.file), "rows": len(scores), "n_folds": n_folds,
                "seed": seed}
        if trained is not None:
            meta["init_from"] = {"folder": str(init_from), "model": trained["model"].name,
                                 "params": trained["model"].params_}
        report = {
            **meta, "chosen": chosen, "grouped_folds": scores.groups is not None,
            "scores": table.to_dicts(),
            "params": {n: m.params_ for n, m in fitted.items()},
            "standard_errors": {n: m.standard_errors(scores.margin, y, scores.weights,
                                                     scores.features
                                                     if n == MultinomialTie.name else None)
                                for n, m in fitted.items()},
        }
        texts = {f"{name}.json": m.dumps(**meta) for name, m in fitted.items()}
        texts[CALIBRATOR_FILE] = fitted[chosen].dumps(chosen_by="out-of-fold log loss", **meta)
        texts[REPORT_FILE] = json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"
        with atomic_paths(*[out / name for name in texts]) as temps:  # all files or none
            for tmp, text in zip(temps, texts.values(), strict=True):
                tmp.write_text(text, encoding="utf-8")
    return RewardCalibration(chosen, fitted[chosen], table,
                             Path(out_dir) if out_dir is not None else None)


def _trained_tie_model(folder: str | Path) -> dict:
    """The tie model a ``prefpred train-reward`` folder was trained with (scale 1, no position
    bias, its tie parameter) and its P(TIE) at equal rewards."""
    from prefpred.rewards.losses import tie_rate
    from prefpred.rewards.train import read_reward_info

    info = read_reward_info(folder)
    if info["loss"] == "bt":
        raise ConfigError(f"--init-from {folder}: trained with the bt loss, which has no tie "
                          "parameter to start from; fit without --init-from")
    model = make_tie_model(info["loss"], position_bias=False)
    model.coef_ = np.array([1.0, 0.0, float(info["tie_parameter"]["value"])])
    model._check_state()
    return {"model": model, "rate": tie_rate(info["loss"], float(model.coef_[2]))}


def resolve_model_path(path: str | Path, name: str | None = None) -> Path:
    """A model folder (its calibrator.json, or ``<name>.json``) or a model JSON file."""
    path = Path(path)
    if name is not None and name not in TIE_MODELS:
        raise ConfigError(f"--use {name!r} is not a tie model; choose one of {sorted(TIE_MODELS)}")
    if path.is_dir():
        target = path / (f"{name}.json" if name else CALIBRATOR_FILE)
        if not target.exists():
            saved = sorted(p.stem for p in path.glob("*.json") if p.stem in TIE_MODELS)
            raise DataError(f"no {target.name} in the model folder (fitted models: {saved})",
                            file=path)
        return target
    if name:
        raise ConfigError("--use NAME needs a model folder, not a single model file")
    if not path.exists():
        raise DataError("model not found", file=path,
                        fix="pass the folder written by `prefpred calibrate-rewards fit`")
    return path


def model_features(model: TieModel) -> list[str]:
    return list(getattr(model, "features", []))


def apply_reward_calibration(model: TieModel, scores: RewardScores) -> np.ndarray:
    """Probabilities (n, 3) in class order (A, B, TIE) for the pairs of a scores file."""
    feats = model_features(model)
    if feats != scores.feature_names:
        raise ConfigError(f"the model needs feature columns {feats}; read the scores with them")
    return model.predict_proba(scores.margin, scores.features if feats else None)


__all__ = ["RewardCalibration", "apply_reward_calibration", "fit_reward_calibration",
           "load_tie_model", "model_features", "resolve_model_path"]
