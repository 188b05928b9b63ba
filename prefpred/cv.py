"""Cross-validation: out-of-fold logits and scores, saved per fold so a run can resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.data.folds import assign_folds, check_folds, fold_split
from prefpred.data.table import PreferenceTable
from prefpred.io import atomic_path, write_json_atomic
from prefpred.labels import CLASSES, LOGIT_COLUMNS
from prefpred.metrics import score_by, softmax
from prefpred.models.base import PreferenceModel, check_logits, set_work_dir


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


def oof_frame(table: PreferenceTable, logits: np.ndarray, folds: np.ndarray) -> pl.DataFrame:
    """Out-of-fold output as a frame: id, source, fold, label, one logit column per class."""
    frame = pl.DataFrame({
        "id": table.ids,
        "source": table.column("source"),
        "fold": folds.astype(np.int64),
        "label": table.column("label"),
    })
    return frame.with_columns([pl.Series(c, logits[:, i]) for i, c in enumerate(LOGIT_COLUMNS)])


def read_oof(path: str | Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def _cv_key(name: str, params: dict[str, Any], fingerprint: str, folds: np.ndarray) -> dict:
    return {
        "model": name,
        "params": json.loads(json.dumps(params, sort_keys=True, default=str)),
        "table": fingerprint,
        "folds": hashlib.sha256(np.asarray(folds, dtype=np.int64).tobytes()).hexdigest()[:16],
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
) -> CVResult:
    """Fit a fresh model on all but one fold, predict that fold, for every fold.

    Each fold's logits are written to ``run_dir/<name>/fold_<k>.parquet`` as soon as it finishes
    (a model with ``set_work_dir`` gets ``run_dir/<name>/fold_<k>_work/`` for checkpoints);
    with ``resume=True`` a fold already written under the same model, parameters, data and folds
    is read back instead of refitted. ``only_folds`` fits just those folds (the other rows of the
    returned logits are NaN), e.g. a one-fold budget run of a slow model.
    """
    y = table.require_labels("cross-validation")
    folds = assign_folds(table, n_folds, seed) if folds is None else np.asarray(folds)
    check_folds(table, folds)
    fold_ids = sorted(set(folds.tolist()))
    todo = fold_ids if only_folds is None else [k for k in fold_ids if k in set(only_folds)]
    params = make_model().get_params()
    out_dir = Path(run_dir) / name if run_dir is not None else None
    key = _cv_key(name, params, table.fingerprint(), folds) if out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        key_file = out_dir / "cv_key.json"
        if key_file.exists() and json.loads(key_file.read_text()) != key:
            for stale in out_dir.glob("fold_*.parquet"):
                stale.unlink()
        write_json_atomic(key_file, key)

    logits = np.full((len(table), len(CLASSES)), np.nan)
    ids = np.asarray(table.ids)
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"cv {name}", total=len(todo))
        for k in todo:
            train_idx, valid_idx = fold_split(folds, k)
            fold_file = out_dir / f"fold_{k}.parquet" if out_dir else None
            if resume and fold_file is not None and fold_file.exists():
                saved = pl.read_parquet(fold_file)
                if saved["id"].to_list() == ids[valid_idx].tolist():
                    logits[valid_idx] = saved.select(LOGIT_COLUMNS).to_numpy()
                    bar.advance(task)
                    continue
            model = make_model()
            set_work_dir(model, out_dir / f"fold_{k}_work" if out_dir else None)
            model.fit(table.take(train_idx))
            valid = table.take(valid_idx)
            fold_logits = check_logits(model.predict_logits(valid), len(valid), name)
            logits[valid_idx] = fold_logits
            if fold_file is not None:
                with atomic_path(fold_file) as tmp:
                    oof_frame(valid, fold_logits, folds[valid_idx]).write_parquet(tmp)
            bar.advance(task)

    done = ~np.isnan(logits).any(1)
    proba = softmax(np.where(done[:, None], logits, 0.0))
    sources = table.column("source").to_numpy()
    scores = score_by(y[done], proba[done], sources[done])
    fold_scores = []
    for k in todo:
        m = folds == k
        fold_scores.append({"fold": k, **score_by(y[m], proba[m], sources[m]).row(-1, named=True)})
    result = CVResult(name, logits, folds, scores, fold_scores, out_dir)
    if out_dir is not None:
        with atomic_path(out_dir / "oof.parquet") as tmp:
            oof_frame(table, logits, folds).filter(pl.Series(done)).write_parquet(tmp)
        write_json_atomic(out_dir / "scores.json", {
            "model": name, "params": params, "n_folds": len(fold_ids), "folds_run": todo,
            "seed": seed, "scores": scores.to_dicts(), "fold_scores": fold_scores,
        })
    return result
