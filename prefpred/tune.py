"""Hyper-parameter search with Optuna: a study in a database, shared by any number of workers.

The storage is a SQLAlchemy URL: ``sqlite:///runs/optuna.db`` (the default, one machine) or
``postgresql+psycopg://user@host:port/db`` (many workers, many machines). Every worker runs
:func:`tune` on the same study name; the study stops when it holds ``n_trials`` finished trials
in total (complete or pruned), so re-running an interrupted command resumes it. Each trial is a
grouped K-fold cross-validation; for LightGBM, Optuna's LightGBM pruning callback watches the
inner validation loss of the first fold and stops hopeless trials early. The best parameters
are saved by name (:func:`prefpred.params.save_params`) for ``prefpred cv/submit --params NAME``.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prefpred.data.folds import assign_folds, out_of_fold
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DependencyError
from prefpred.metrics import log_loss
from prefpred.models.base import build_model, check_logits
from prefpred.probabilities import softmax

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"


def _lgbm_space(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.15, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.1, 0.9),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-3, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "min_split_gain": trial.suggest_float("min_split_gain", 0.0, 0.5),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
        "feature_set": trial.suggest_categorical("feature_set", ["all", "no-last", "pairwise"]),
    }


def _tfidf_space(trial) -> dict[str, Any]:
    return {
        "C": trial.suggest_float("C", 0.02, 5.0, log=True),
        "word_max_features": trial.suggest_int("word_max_features", 2000, 50_000, log=True),
        "char_max_features": trial.suggest_int("char_max_features", 2000, 50_000, log=True),
        "min_df": trial.suggest_int("min_df", 1, 5),
    }


#: model name -> function of an Optuna trial giving that trial's parameters.
SEARCH_SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "lgbm": _lgbm_space,
    "tfidf": _tfidf_space,
}


@dataclass
class TuneResult:
    study_name: str
    best_value: float | None
    best_params: dict[str, Any]
    n_finished: int
    n_run_here: int
    saved_to: Path | None


def _storage(url: str, heartbeat: int | None = 60):
    """An RDB storage for ``url`` that waits for locks (SQLite) and survives a second worker
    creating the schema at the same moment (one retry after a short random pause)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    last: Exception | None = None
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                    grace_period=None if heartbeat is None else 4 * heartbeat)
        except ModuleNotFoundError as err:
            raise DependencyError(f"storage {redact(url)} needs {err.name}; for PostgreSQL "
                                  "install prefpred[postgres] (psycopg)") from None
        except DBAPIError as err:  # e.g. schema creation raced with another worker: retry
            last = err
            time.sleep(0.5 + random.random() * (attempt + 1))
        except (SQLAlchemyError, ValueError) as err:  # a malformed URL, an unknown dialect
            last = err
            break
    raise ConfigError(f"cannot open Optuna storage {redact(url)}: "
                      f"{type(last).__name__}: {last}") from None


def redact(url: str) -> str:
    """The storage URL with any password hidden (safe to print and save)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_study(storage: str, study_name: str, *, sampler_seed: int = 0,
               heartbeat: int | None = 60):
    """Create or load the study (minimise out-of-fold log loss)."""
    import optuna
    from sqlalchemy.exc import DBAPIError

    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=8,
                                         multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=40)
    store = _storage(storage, heartbeat)
    for attempt in range(4):
        try:
            return optuna.create_study(study_name=study_name, storage=store, sampler=sampler,
                                       pruner=pruner, direction="minimize",
                                       load_if_exists=True)
        except DBAPIError as err:  # a concurrent create of the same study
            if attempt == 3:
                raise ConfigError(f"cannot open study {study_name!r} in {redact(storage)}: "
                                  f"{type(err).__name__}: {err}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def cv_objective(table: PreferenceTable, model: str, base_params: dict[str, Any], *,
                 folds: np.ndarray, space: Callable[[Any], dict[str, Any]]):
    """An Optuna objective: the grouped out-of-fold log loss of ``model`` on ``table``."""
    import optuna

    y = table.labels()
    first_fold = int(np.min(folds))

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **space(trial)}
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("params", params)

        def fit_predict(k: int, train_idx: np.ndarray, valid_idx: np.ndarray) -> np.ndarray:
            m = build_model(model, params)
            if model == "lgbm" and k == first_fold:
                from optuna_integration.lightgbm import LightGBMPruningCallback

                m.fit(table.take(train_idx),
                      callbacks=[LightGBMPruningCallback(trial, "multi_logloss", "valid")])
            else:
                m.fit(table.take(train_idx))
            valid = table.take(valid_idx)
            return check_logits(m.predict_logits(valid), len(valid), model)

        def prune(k: int, logits: np.ndarray) -> None:
            if model != "lgbm":  # no library callback: prune on the running fold losses
                done = ~np.isnan(logits).any(1)
                trial.report(log_loss(y[done], softmax(logits[done])), step=k)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        return log_loss(y, softmax(out_of_fold(folds, fit_predict, after_fold=prune)))

    return objective


def tune(
    table: PreferenceTable,
    *,
    model: str = "lgbm",
    n_trials: int = 20,
    storage: str = DEFAULT_STORAGE,
    study_name: str,
    base_params: dict[str, Any] | None = None,
    n_folds: int = 5,
    seed: int = 42,
    worker: int = 0,
    timeout: float | None = None,
    save_as: str | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run trials of ``study_name`` until it holds ``n_trials`` finished trials (all workers
    together) or ``timeout`` seconds pass; save the best parameters as ``save_as`` (default:
    the study name). ``worker`` offsets the sampler seed so parallel workers explore
    differently; folds (``n_folds``, ``seed``) must be the same for every worker of a study."""
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError as err:  # pragma: no cover - a core dependency
        raise DependencyError(f"tuning needs optuna ({err})") from None
    if model not in SEARCH_SPACES:
        raise ConfigError(f"no search space for model {model!r}; tunable: {sorted(SEARCH_SPACES)}")
    if n_trials < 0:
        raise ConfigError("--trials must be >= 0")
    base_params = dict(base_params or {})
    build_model(model, base_params)  # fail fast on bad fixed parameters
    table.require_labels("tuning")
    folds = assign_folds(table, n_folds, seed)
    if model == "lgbm":  # compute the features of every row and its swap once per worker
        build_model(model, base_params).precompute_features(table, progress=progress)

    study = open_study(storage, study_name, sampler_seed=seed * 1000 + worker)
    study.set_user_attr("model", model)
    study.set_user_attr("n_folds", n_folds)
    study.set_user_attr("fold_seed", seed)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    before = len(study.get_trials(deepcopy=False, states=finished))
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    remaining = max(0, n_trials - before)
    if remaining:
        study.optimize(
            cv_objective(table, model, base_params, folds=folds, space=SEARCH_SPACES[model]),
            n_trials=remaining, timeout=timeout, gc_after_trial=True,
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=finished)],
            catch=(),
        )
    trials = study.get_trials(deepcopy=False, states=finished)
    mine = [t for t in trials if t.user_attrs.get("worker_pid") == os.getpid()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return TuneResult(study_name, None, {}, len(trials), len(mine), None)
    best = study.best_trial
    best_params = {**base_params, **best.params}
    from prefpred.params import save_params

    path = save_params(save_as or study_name, model, best_params, value=best.value,
                       study=study_name, storage=redact(storage), trial=best.number,
                       n_folds=n_folds, fold_seed=seed, n_finished=len(trials))
    return TuneResult(study_name, float(best.value), best_params, len(trials), len(mine), path)
