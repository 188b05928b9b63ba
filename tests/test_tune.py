"""Optuna tuning: two worker processes share one study, in SQLite and in a real PostgreSQL
server (Debian's package, started here on a loopback port); pruning goes through LightGBM's
callback; an interrupted study resumes; the best parameters are used by name."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import KAGGLE, PROJECT_ROOT

from prefpred.data.folds import assign_folds
from prefpred.tune import cv_objective, open_study, redact, tune

#: Small, fast trials: the Kaggle sample, 2 folds, few trees, one thread per worker.
FIXED = ["n_estimators=40", "early_stopping_rounds=10", "num_threads=1", "feature_cache=''"]


def _tune_args(storage: str, study: str, trials: int, worker: int) -> list[str]:
    args = ["tune", "--model", "lgbm", "--trials", str(trials), "--storage", storage,
            "--study", study, "--competition", "lmsys-chatbot-arena", "--data", str(KAGGLE),
            "--folds", "2", "--worker", str(worker)]
    for p in FIXED:
        args += ["--param", p]
    return args


def _run_two_workers(storage: str, study: str, trials: int, env: dict) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-m", "prefpred.cli",
                               *_tune_args(storage, study, trials, w)],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"worker failed:\n{out}\n{err}"
        outs.append(out)
    return outs


def _check_shared_study(storage: str, study_name: str, trials: int, params_dir: Path,
                        env: dict, tmp_path: Path) -> None:
    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= trials
    assert len({t.user_attrs["worker_pid"] for t in finished}) == 2  # both workers did trials
    assert len({t.number for t in finished}) == len(finished)
    saved = json.loads((params_dir / f"{study_name}.json").read_text())
    assert saved["model"] == "lgbm" and saved["value"] == pytest.approx(study.best_value)
    assert saved["params"]["learning_rate"] == study.best_params["learning_rate"]
    # `cv --params NAME` uses the saved parameters
    res = subprocess.run([sys.executable, "-m", "prefpred.cli", "cv", "--competition",
                          "lmsys-chatbot-arena", "--data", str(KAGGLE), "--model", "lgbm",
                          "--folds", "2", "--params", study_name, "--run-dir", str(tmp_path)],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "lmsys-chatbot-arena" / "lgbm" / "scores.json").read_text())
    assert scores["params"]["num_leaves"] == study.best_params["num_leaves"]


@pytest.fixture
def worker_env(tmp_path):
    env = dict(os.environ, PREFPRED_PARAMS_DIR=str(tmp_path / "params"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    return env


def test_two_workers_share_one_sqlite_study(tmp_path, worker_env):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    outs = _run_two_workers(storage, "lgbm-sqlite", 4, worker_env)
    assert all("best out-of-fold log loss" in o for o in outs)
    _check_shared_study(storage, "lgbm-sqlite", 4, tmp_path / "params", worker_env, tmp_path)


# --------------------------------------------------------------------------- PostgreSQL
def _pg_bindir() -> Path | None:
    env = os.environ.get("PG_BINDIR")
    candidates = [Path(env)] if env else []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def _account(name: str):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port, in a temporary cluster owned by
    an existing unprivileged account when the tests run as root (initdb refuses root; no
    account is created), removed afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                    "`postgresql` package (.ci/run does) or set PG_BINDIR")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="prefpred-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # run the server as an existing unprivileged account; create none
        user = next((u for u in (_account("postgres"), _account("nobody")) if u), None)
        if user is None:
            pytest.fail("running as root with neither a 'postgres' nor a 'nobody' account to "
                        "start PostgreSQL as")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--clear-groups", "--"]
    data, log, port = base / "data", base / "server.log", _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "prefpred", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                            "-o", opts, "-w", "-t", "60", "start"], capture_output=True, text=True)
    if start.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {start.stderr}\n"
                    f"{log.read_text() if log.exists() else ''}")
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="prefpred", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
        yield f"postgresql+psycopg://prefpred@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_share_one_postgres_study(postgres_url, tmp_path, worker_env):
    outs = _run_two_workers(postgres_url, "lgbm-postgres", 4, worker_env)
    assert all("postgresql+psycopg" in o for o in outs)
    _check_shared_study(postgres_url, "lgbm-postgres", 4, tmp_path / "params", worker_env,
                        tmp_path)


# --------------------------------------------------------------------------- in-process
@pytest.fixture(scope="module")
def small_table(kaggle_table):
    return kaggle_table.take(np.arange(400))


def test_lightgbm_callback_prunes_a_trial(small_table, tmp_path):
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(storage=storage, study_name="prune",
                                pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    folds = assign_folds(small_table, 2, 0)
    objective = cv_objective(small_table, "lgbm", {"n_estimators": 30, "num_threads": 1,
                                                   "feature_cache": None},
                             folds=folds, space=lambda trial: {
                                 "learning_rate": trial.suggest_float("learning_rate", 0.1, 0.2)})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values  # reported by LightGBM's callback, step = iteration


def test_resume_runs_only_the_missing_trials(small_table, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFPRED_PARAMS_DIR", str(tmp_path / "params"))
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    fixed = {"n_estimators": 20, "early_stopping_rounds": 5, "num_threads": 1,
             "feature_cache": None}
    first = tune(small_table, n_trials=2, storage=storage, study_name="r", base_params=fixed,
                 n_folds=2, progress=False)
    assert first.n_finished == 2 and first.n_run_here == 2
    again = tune(small_table, n_trials=3, storage=storage, study_name="r", base_params=fixed,
                 n_folds=2, progress=False)
    assert again.n_finished == 3
    saved = json.loads((tmp_path / "params" / "r.json").read_text())
    assert saved["params"]["n_estimators"] == 20 and saved["n_finished"] == 3
    assert saved["value"] == pytest.approx(again.best_value)


def test_storage_url_password_is_never_printed():
    assert "secret" not in redact("postgresql+psycopg://me:secret@db:5432/optuna")
    assert redact("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"


def test_bad_storage_is_one_line_error(tmp_path):
    from prefpred.errors import PrefpredError

    with pytest.raises(PrefpredError):
        open_study("notadb://x", "s")
