"""The stages the CLI wires together: cross-validate a model, fit it and write a submission."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from prefpred import __version__
from prefpred.config import Competition
from prefpred.cv import CVResult, run_cv
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError
from prefpred.io import file_sha256, git_commit
from prefpred.metrics import softmax
from prefpred.models.base import build_model, check_logits, set_work_dir
from prefpred.submission import write_submission


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as a TOML literal (numbers, booleans, lists, strings)."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r} is not key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def load_params(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Model parameters from a TOML or JSON file (optional) updated by ``key=value`` overrides."""
    params: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.exists():
            from prefpred.params import resolve_saved_params

            p = resolve_saved_params(str(path))
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{p}: cannot parse parameters ({err})") from None
        params.update(data.get("params", data))
    for item in overrides or []:
        key, value = parse_param(item)
        params[key] = value
    return params


def files_fingerprint(paths: list[str | Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = file_sha256(f)
    return out


def cross_validate(table: PreferenceTable, competition: Competition, model: str,
                   params: dict[str, Any], *, run_dir: Path | None, n_folds: int | None = None,
                   seed: int | None = None, progress: bool = True,
                   only_folds: list[int] | None = None, resume: bool = True) -> CVResult:
    build_model(model, params)  # fail fast on bad parameters
    return run_cv(
        table, lambda: build_model(model, params), name=model,
        n_folds=n_folds or competition.n_folds, seed=competition.seed if seed is None else seed,
        run_dir=run_dir, progress=progress, only_folds=only_folds, resume=resume,
    )


def fit_predict(train: PreferenceTable, test: PreferenceTable, model: str,
                params: dict[str, Any], work_dir: Path | None = None) -> np.ndarray:
    """Fit on all of ``train``; return test probabilities (softmax of the model's logits)."""
    m = build_model(model, params)
    set_work_dir(m, work_dir)
    m.fit(train)
    return softmax(check_logits(m.predict_logits(test), len(test), model))


def submit(
    competition: Competition,
    train: PreferenceTable,
    test: PreferenceTable,
    *,
    model: str,
    params: dict[str, Any],
    out: Path,
    train_paths: list[str | Path],
    test_path: str | Path,
    cv: CVResult | None = None,
    work_dir: Path | None = None,
) -> Path:
    proba = fit_predict(train, test, model, params, work_dir)
    provenance = {
        "prefpred_version": __version__,
        "git_commit": git_commit(Path(__file__).parent),
        "model": model,
        "params": params,
        "train_rows": len(train),
        "test_rows": len(test),
        "data": {"train": files_fingerprint(train_paths), "test": files_fingerprint([test_path])},
        "train_table_fingerprint": train.fingerprint(),
        "cv": None if cv is None else {
            "n_folds": int(len(set(cv.folds.tolist()))),
            "scores": cv.scores.to_dicts(),
        },
    }
    return write_submission(out, test, proba, competition, provenance)
