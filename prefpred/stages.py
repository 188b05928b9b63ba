"""The stages every command composes: cross-validate a model, fit it and predict a test table,
record what made an output. ``prefpred cv``, ``prefpred submit`` and ``prefpred run`` call these
and nothing else to train models; stages never import commands.

- :func:`run_cv` / :func:`cross_validate`: grouped K-fold out-of-fold logits, one file per fold
  (a run resumes after an interrupt), then ``oof.parquet`` (:mod:`prefpred.oof`) and
  ``scores.json``.
- :func:`fit_predict`: fit on all training rows, predict the test table; the test logits are
  cached beside a key (model, parameters, training and test data) and reused while it matches.
- :func:`build_provenance`: the record written beside every submission.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from prefpred.competitions import Competition
from prefpred.data.folds import assign_folds, check_folds, out_of_fold
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError
from prefpred.io import (
    atomic_path,
    file_sha256,
    git_commit,
    json_digest,
    read_back,
    write_json_atomic,
)
from prefpred.labels import LOGIT_COLUMNS, check_label_mix
from prefpred.metrics import score_by, table_scoring
from prefpred.models.base import (
    MODEL_FILE,
    PreferenceModel,
    build_model,
    check_logits,
    save_model,
    set_work_dir,
)
from prefpred.oof import OOF_FILE, oof_frame, read_oof, write_oof
from prefpred.probabilities import softmax
from prefpred.submission import write_submission

if TYPE_CHECKING:
    from prefpred.distill import Distillation


# --------------------------------------------------------------------------- cross-validation
@dataclass
class CVResult:
    name: str
    oof_logits: np.ndarray  # (n, 3), row order of the table
    folds: np.ndarray
    scores: pl.DataFrame  # one row per source, then ALL
    fold_scores: list[dict[str, float]]
    run_dir: Path | None = None

    @property
    def log_loss(self) -> float:
        return float(self.scores.filter(pl.col("group") == "ALL")["log_loss"][0])


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def folds_digest(folds: np.ndarray) -> str:
    """A short digest of a fold assignment (in CV keys)."""
    return hashlib.sha256(np.asarray(folds, dtype=np.int64).tobytes()).hexdigest()[:16]


def _cv_key(name: str, params: dict[str, Any], fingerprint: str, folds: np.ndarray) -> dict:
    return {
        "model": name,
        "params": json.loads(json.dumps(params, sort_keys=True, default=str)),
        "table": fingerprint,
        "folds": folds_digest(folds),
    }


def run_cv(
    table: PreferenceTable,
    make_model: Callable[[], PreferenceModel],
    *,
    name: str = "model",
    n_folds: int = 5,
    seed: int = 42,
    folds: np.ndarray | None = None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    only_folds: list[int] | None = None,
    save_models_as: str | None = None,
    train_rows: Callable[[int, np.ndarray], PreferenceTable] | None = None,
    key_extra: dict[str, Any] | None = None,
    registered: str | None = None,
) -> CVResult:
    """Fit a fresh model on all but one fold, predict that fold, for every fold.

    Each fold's logits are written to ``run_dir/<name>/fold_<k>.parquet`` as soon as it finishes
    (a model with ``set_work_dir`` gets ``run_dir/<name>/fold_<k>_work/`` for checkpoints);
    with ``resume=True`` a fold already written under the same model, parameters, data and folds
    is read back instead of refitted. ``only_folds`` fits just those folds (the other rows of the
    returned logits are NaN), e.g. a one-fold budget run of a slow model.
    ``save_models_as`` (the registered model name) keeps every fold's fitted model in
    ``run_dir/<name>/fold_<k>_model/`` (:func:`prefpred.models.base.save_model`), for a fold
    ensemble of the test predictions; a fold without its saved model is refitted.
    ``train_rows(k, train_idx)`` gives fold k's training rows instead of ``table.take(train_idx)``
    (distillation targets, pseudo-labelled rows; ``key_extra`` says what it depends on).
    Scores are always computed on ``table``'s own labelled rows.
    """
    y = table.require_labels("cross-validation")
    check_label_mix(y, f"{table.origin or 'the training data'}: cross-validation")
    folds = assign_folds(table, n_folds, seed) if folds is None else np.asarray(folds)
    check_folds(table, folds)
    fold_ids = sorted(set(folds.tolist()))
    unknown = sorted(set(only_folds or []) - set(fold_ids))
    if unknown:
        raise ConfigError(f"--only-fold {unknown[0]}: the folds are numbered {fold_ids[0]} to "
                          f"{fold_ids[-1]}")
    todo = fold_ids if only_folds is None else [k for k in fold_ids if k in set(only_folds)]
    params = make_model().get_params()
    out_dir = Path(run_dir) / name if run_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        key = _cv_key(name, params, table.fingerprint(), folds)
        if key_extra is not None:
            key["extra"] = json.loads(json.dumps(key_extra, sort_keys=True, default=str))
        key_file = out_dir / "cv_key.json"
        if key_file.exists() and read_back(key_file, _read_json, "the CV key") != key:
            for stale in out_dir.glob("fold_*.parquet"):
                stale.unlink()
        write_json_atomic(key_file, key)
    ids = np.asarray(table.ids)
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"cv {name}", total=len(todo))

        def fit_predict_fold(k: int, train_idx: np.ndarray, valid_idx: np.ndarray) -> np.ndarray:
            fold_file = out_dir / f"fold_{k}.parquet" if out_dir else None
            model_dir = out_dir / f"fold_{k}_model" if out_dir and save_models_as else None
            if resume and fold_file is not None and (
                    model_dir is None or (model_dir / MODEL_FILE).is_file()):
                want = ids[valid_idx].tolist()
                saved = read_back(fold_file, lambda p: read_oof(p)[0], "the finished fold",
                                  check=lambda f: f["id"].to_list() == want
                                  and f["fold"].to_list() == [k] * len(want))
                if saved is not None:
                    return saved.select(LOGIT_COLUMNS).to_numpy()
            model = make_model()
            set_work_dir(model, out_dir / f"fold_{k}_work" if out_dir else None)
            model.fit(train_rows(k, train_idx) if train_rows else table.take(train_idx))
            valid = table.take(valid_idx)
            fold_logits = check_logits(model.predict_logits(valid), len(valid), name)
            if model_dir is not None:
                save_model(model, save_models_as, model_dir)
            if fold_file is not None:
                write_oof(fold_file, oof_frame(valid, fold_logits, folds[valid_idx]))
            return fold_logits

        logits = out_of_fold(folds, fit_predict_fold, only=todo,
                             after_fold=lambda _k, _out: bar.advance(task))

    done = ~np.isnan(logits).any(1)
    proba = softmax(np.where(done[:, None], logits, 0.0))
    sources = table.column("source").to_numpy()
    scoring = table_scoring(table)

    def scoring_of(m: np.ndarray) -> dict[str, np.ndarray | None]:
        return {k: None if v is None else v[m] for k, v in scoring.items()}

    scores = score_by(y[done], proba[done], sources[done], **scoring_of(done))
    fold_scores = []
    for k in todo:
        m = folds == k
        fold_scores.append({"fold": k, **score_by(y[m], proba[m], sources[m],
                                                   **scoring_of(m)).row(-1, named=True)})
    result = CVResult(name, logits, folds, scores, fold_scores, out_dir)
    if out_dir is not None:
        write_oof(out_dir / OOF_FILE, oof_frame(table, logits, folds).filter(pl.Series(done)))
        write_json_atomic(out_dir / "scores.json", {
            "model": name, "registered_model": registered, "params": params,
            "n_folds": len(fold_ids), "folds_run": todo, "extra": key_extra,
            "seed": seed, "scores": scores.to_dicts(), "fold_scores": fold_scores,
        })
    return result


def cross_validate(table: PreferenceTable, competition: Competition, model: str,
                   params: dict[str, Any], *, run_dir: Path | None, n_folds: int | None = None,
                   seed: int | None = None, progress: bool = True,
                   only_folds: list[int] | None = None, resume: bool = True,
                   label: str | None = None, save_models: bool = False,
                   distill: Distillation | None = None,
                   say: Callable[[str], None] | None = None) -> CVResult:
    """:func:`run_cv` of a registered model (folds and seed default to the competition's);
    ``label`` names the run folder (default: the model name, ``<model>-distilled`` with
    ``distill``); ``save_models`` keeps each fold's fitted model. ``distill`` trains each fold
    on nested teacher targets (:mod:`prefpred.distill`), cached in the run folder."""
    build_model(model, params)  # fail fast on bad parameters
    n_folds = n_folds or competition.n_folds
    seed = competition.seed if seed is None else seed
    folds, train_rows, key_extra = None, None, None
    if distill is not None:
        label = label or f"{model}-distilled"
        if run_dir is not None:
            distill.check_output(Path(run_dir) / label)
        folds = assign_folds(table, n_folds, seed)
        if distill.logits is None or distill.folds is None or \
                not np.array_equal(distill.folds, folds):
            cache = None
            if run_dir is not None:
                cache = Path(run_dir) / f"teacher-{json_digest(distill.teacher_key())[:12]}"
            distill.prepare(table, folds, cache, say=say)

        def train_rows(k: int, idx: np.ndarray) -> PreferenceTable:
            return distill.fold_table(table, k, idx)

        key_extra = distill.key()
    return run_cv(
        table, lambda: build_model(model, params), name=label or model,
        n_folds=n_folds, seed=seed, folds=folds,
        run_dir=run_dir, progress=progress, only_folds=only_folds, resume=resume,
        save_models_as=model if save_models else None, train_rows=train_rows,
        key_extra=key_extra, registered=model,
    )


# --------------------------------------------------------------------------- fit and predict
def fit_predict(train: PreferenceTable, test: PreferenceTable, model: str,
                params: dict[str, Any], *, work_dir: Path | None = None,
                cache: Path | None = None, say: Callable[[str], None] | None = None,
                label: str | None = None, save_to: Path | None = None) -> np.ndarray:
    """Fit a registered model on all of ``train``; return its logits (n, 3) on ``test``.

    With ``cache`` (a ``.parquet`` path), the logits are written there with a key file beside
    them (model, parameters, training and test fingerprints) and read back instead of refitting
    while the key and the test ids match (and, with ``save_to``, the saved model is there).
    ``save_to`` keeps the fitted model (:func:`prefpred.models.base.save_model`). ``say``
    hears which happened (``label`` names the model there).
    """
    import time

    label = label or model
    key = {"model": model, "params": params, "train": train.fingerprint(),
           "test": test.fingerprint()}

    def compute() -> np.ndarray:
        t0 = time.perf_counter()
        check_label_mix(train.require_labels("training"),
                        f"{train.origin or 'the training data'}: training")
        m = build_model(model, params)
        set_work_dir(m, work_dir)
        m.fit(train)
        logits = check_logits(m.predict_logits(test), len(test), label)
        if save_to is not None:
            save_model(m, model, save_to)
        if say is not None:
            say(f"{label}: refitted on all {len(train)} rows, predicted {len(test)} test rows "
                f"({time.perf_counter() - t0:.0f} s)")
        return logits

    saved = save_to is None or (save_to / MODEL_FILE).is_file()
    return cached_logits(cache, key, test, compute, say=say, label=label, reuse=saved)


def cached_logits(cache: Path | None, key: dict[str, Any], test: PreferenceTable,
                  compute: Callable[[], np.ndarray], *, say: Callable[[str], None] | None = None,
                  label: str = "model", reuse: bool = True) -> np.ndarray:
    """``compute()``'s logits on ``test``, or (``reuse``) the ones ``cache`` (a ``.parquet``
    path, with ``key`` in a file beside it) holds for the same key and test ids (checked like
    any read back); what is computed is written there."""
    key_file = cache.with_suffix(".key.json") if cache is not None else None
    if reuse and cache is not None and cache.exists() and key_file.exists() and read_back(
            key_file, _read_json, "the test-logit key") == json.loads(json.dumps(key, default=str)):
        frame = read_back(cache, pl.read_parquet, "the cached test logits",
                          check=lambda f: f["id"].to_list() == test.ids
                          and np.isfinite(f.select(LOGIT_COLUMNS).to_numpy()).all())
        if frame is not None:
            if say is not None:
                say(f"{label}: test logits reused")
            return frame.select(LOGIT_COLUMNS).to_numpy()
    logits = compute()
    if cache is not None:
        frame = pl.DataFrame({"id": test.ids}).with_columns(
            [pl.Series(c, logits[:, i]) for i, c in enumerate(LOGIT_COLUMNS)])
        with atomic_path(cache) as tmp:
            frame.write_parquet(tmp)
        write_json_atomic(key_file, key)
    return logits


# --------------------------------------------------------------------------- provenance
def files_fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of every file (every file under a folder), by path."""
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = file_sha256(f)
    return out


def build_provenance(*, test_paths: Iterable[str | Path] = (),
                     train_paths: Iterable[str | Path] | None = None,
                     train: PreferenceTable | None = None, test: PreferenceTable | None = None,
                     **fields: Any) -> dict[str, Any]:
    """What made an output: prefpred's version and commit, sha256 of the input files, row
    counts and the training table's fingerprint, and any further ``fields`` (model, params...)."""
    data: dict[str, Any] = {"test": files_fingerprint(test_paths)}
    if train_paths is not None:
        data["train"] = files_fingerprint(train_paths)
    out: dict[str, Any] = {"prefpred_version": _version(),
                           "git_commit": git_commit(Path(__file__).parent), "data": data}
    if train is not None:
        out.update(train_rows=len(train), train_table_fingerprint=train.fingerprint())
    if test is not None:
        out["test_rows"] = len(test)
    return {**out, **fields}


def _version() -> str:
    from prefpred import __version__

    return __version__


def fit_and_submit(competition: Competition, train: PreferenceTable, test: PreferenceTable, *,
                   model: str, params: dict[str, Any], out: Path,
                   train_paths: list[str | Path], test_path: str | Path,
                   cv: CVResult | None = None, work_dir: Path | None = None) -> Path:
    """Fit on all of ``train``, predict ``test``, write and validate the submission."""
    proba = softmax(fit_predict(train, test, model, params, work_dir=work_dir))
    provenance = build_provenance(
        test_paths=[test_path], train_paths=train_paths, train=train, test=test, model=model,
        params=params, cv=None if cv is None else {
            "n_folds": int(len(set(cv.folds.tolist()))), "scores": cv.scores.to_dicts()})
    return write_submission(out, test, proba, competition, provenance)
