"""``prefpred run CONFIG.toml``: base models through CV, stack, calibrate, refit, predict the test
file, write and validate the submission, and write an HTML report.

Stages and what is reused on a re-run (everything lives under the run's ``out_dir``):

1. data      the training table, and the test table (a file, or a grouped hold-out split of the
             training data whose labels are kept apart for scoring)
2. base      per base model: grouped K-fold out-of-fold logits (``cv/<label>/``, one file per fold,
             resumed after an interrupt) and the model refitted on all training rows predicting
             the test table (``test/<label>.parquet``, reused while model, parameters and data
             are unchanged)
3. stack     stackers and blends over the out-of-fold logits, scored by nested CV; the chosen
             one refitted on all out-of-fold rows and applied to the test logits
4. calibrate calibrators scored out of fold; the chosen one fitted on all out-of-fold rows
5. submit    the submission written atomically, validated, with provenance
6. report    ``report.html``: scores per model and source, reliability diagrams, loss by length,
             confusion matrix, feature importances, timings

Stages 3-6 take seconds and are recomputed on every run; stage 2 is where the time goes.
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.errors import ConfigError

STACK_METHODS = ("auto", "none", "blend", "logistic", "lgbm")
CALIBRATION_METHODS = ("auto", "none", "temperature", "vector", "temperature_by_length")


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ModelSpec:
    """One base model: a registered model name, a label (unique in the run) and parameters."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HoldoutSpec:
    source: str | None = None
    fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    name: str
    competition: str
    submission_competition: str
    out_dir: Path
    models: tuple[ModelSpec, ...]
    train: tuple[str, ...] = ()
    test: str | None = None
    holdout: HoldoutSpec | None = None
    folds: int | None = None
    seed: int | None = None
    stack: str = "auto"
    stack_candidates: tuple[str, ...] = ("blend", "logistic", "lgbm")
    stack_features: str = "length"
    calibration: str = "auto"
    calibration_candidates: tuple[str, ...] = ("temperature", "vector", "temperature_by_length")
    submission: Path | None = None
    report: Path | None = None
    file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return json.loads(json.dumps(data, default=str))


def _as_tuple(value: Any, key: str, file: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{file}: '{key}' must be a string or a list of strings")


def load_run_config(path: str | Path) -> RunConfig:
    """Parse and check a run TOML (see ``configs/demo.toml`` for every key)."""
    from prefpred.models.base import model_names
    from prefpred.workflow import load_params

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: run configuration not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None
    known = {"run", "data", "models", "stack", "calibration", "output"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; known {sorted(known)}")
    run = data.get("run", {})
    if "competition" not in run:
        raise ConfigError(f"{path}: [run] needs 'competition'")
    name = run.get("name", path.stem)
    out_dir = Path(run.get("out_dir", f"runs/{name}"))
    models = []
    for i, spec in enumerate(data.get("models", []), 1):
        if "name" not in spec:
            raise ConfigError(f"{path}: [[models]] #{i} needs 'name'")
        if spec["name"] not in model_names():
            raise ConfigError(f"{path}: [[models]] #{i}: unknown model {spec['name']!r}; "
                              f"choose one of {model_names()}")
        unknown_keys = set(spec) - {"name", "label", "params", "params_file", "config",
                                    "backbone"}
        if unknown_keys:
            raise ConfigError(f"{path}: [[models]] #{i}: unknown key(s) {sorted(unknown_keys)}")
        params = load_params(spec.get("params_file"), None)
        params.update(spec.get("params", {}))
        model_name = spec["name"]
        if "config" in spec or "backbone" in spec:  # a backbone preset / model folder
            from prefpred.models.backbone.config import apply_cli_options

            model_name, params = apply_cli_options(model_name, params, spec.get("backbone"),
                                                   spec.get("config"))
        models.append(ModelSpec(model_name, spec.get("label", model_name), params))
    if not models:
        raise ConfigError(f"{path}: at least one [[models]] entry is needed")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: model labels must be unique, got {labels}")
    d = data.get("data", {})
    holdout = None
    if "holdout" in d:
        h = d["holdout"]
        holdout = HoldoutSpec(h.get("source"), float(h.get("fraction", 0.2)), int(h.get("seed", 0)))
    if holdout is None and "test" not in d:
        raise ConfigError(f"{path}: [data] needs 'test' (a test file) or a [data.holdout] table")
    if holdout is not None and "test" in d:
        raise ConfigError(f"{path}: [data] takes 'test' or [data.holdout], not both")
    stack = data.get("stack", {})
    cal = data.get("calibration", {})
    out = data.get("output", {})
    cfg = RunConfig(
        name=name,
        competition=run["competition"],
        submission_competition=run.get("submission_competition", run["competition"]),
        out_dir=out_dir,
        models=tuple(models),
        train=_as_tuple(d["train"], "train", path) if "train" in d else (),
        test=d.get("test"),
        holdout=holdout,
        folds=run.get("folds"),
        seed=run.get("seed"),
        stack=stack.get("method", "auto"),
        stack_candidates=_as_tuple(stack.get("candidates", ["blend", "logistic", "lgbm"]),
                                   "candidates", path),
        stack_features=stack.get("features", "length"),
        calibration=cal.get("method", "auto"),
        calibration_candidates=_as_tuple(
            cal.get("candidates", ["temperature", "vector", "temperature_by_length"]),
            "candidates", path),
        submission=Path(out["submission"]) if "submission" in out else None,
        report=Path(out["report"]) if "report" in out else None,
        file=path,
    )
    if cfg.stack not in STACK_METHODS:
        raise ConfigError(f"{path}: [stack] method {cfg.stack!r} is not one of {STACK_METHODS}")
    for c in cfg.stack_candidates:
        if c not in STACK_METHODS[2:]:
            raise ConfigError(f"{path}: [stack] candidate {c!r} is not one of {STACK_METHODS[2:]}")
    if cfg.stack_features not in ("length", "none"):
        raise ConfigError(f"{path}: [stack] features must be 'length' or 'none'")
    if cfg.calibration not in CALIBRATION_METHODS:
        raise ConfigError(f"{path}: [calibration] method {cfg.calibration!r} is not one of "
                          f"{CALIBRATION_METHODS}")
    for c in cfg.calibration_candidates:
        if c not in CALIBRATION_METHODS[1:]:
            raise ConfigError(f"{path}: [calibration] candidate {c!r} is not one of "
                              f"{CALIBRATION_METHODS[1:]}")
    return cfg


# --------------------------------------------------------------------------- stages
@dataclass
class RunResult:
    config: RunConfig
    submission: Path
    report: Path
    final_method: str  # e.g. "stack:logistic + temperature"
    oof_scores: pl.DataFrame  # model, calibration, group, metrics...
    final_oof_log_loss: float
    holdout_scores: pl.DataFrame | None
    timings: dict[str, float]


def _key_digest(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_tables(cfg: RunConfig, say):
    """(competition, train table, test table, test labels table or None, test file path)."""
    from prefpred.config import load_competition
    from prefpred.data.export import split_holdout, write_kaggle_csv

    comp = load_competition(cfg.competition)
    sub_comp = load_competition(cfg.submission_competition)
    train = comp.load_train(list(cfg.train) or None)
    if cfg.holdout is not None:
        h = cfg.holdout
        train, held = split_holdout(train, source=h.source, fraction=h.fraction, seed=h.seed)
        data_dir = cfg.out_dir / "data"
        test_path = data_dir / "test.csv"
        write_kaggle_csv(held, test_path, with_labels=False)
        write_kaggle_csv(held, data_dir / "test_labelled.csv", with_labels=True)
        test = sub_comp.load_test(test_path)
        say(f"hold-out: {len(held)} test rows ({h.source or 'all sources'}), "
            f"{len(train)} training rows")
        return comp, sub_comp, train, test, held, test_path
    test_path = Path(cfg.test)
    test = sub_comp.load_test(test_path)
    labels = test if test.is_labelled else None
    return comp, sub_comp, train, test, labels, test_path


def _base_models(cfg, comp, train, test, say) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Out-of-fold runs and test logits of every base model (reused when unchanged)."""
    from prefpred.cv import run_cv
    from prefpred.io import atomic_path, write_json_atomic
    from prefpred.labels import LOGIT_COLUMNS
    from prefpred.models.base import build_model, check_logits, set_work_dir

    n_folds = cfg.folds or comp.n_folds
    seed = comp.seed if cfg.seed is None else cfg.seed
    oof_dirs: dict[str, Path] = {}
    test_logits: dict[str, np.ndarray] = {}
    train_fp, test_fp = train.fingerprint(), test.fingerprint()
    for spec in cfg.models:
        t0 = time.perf_counter()
        build_model(spec.name, spec.params)  # fail fast on bad parameters
        res = run_cv(train, lambda spec=spec: build_model(spec.name, spec.params),
                     name=spec.label, n_folds=n_folds, seed=seed, run_dir=cfg.out_dir / "cv")
        oof_dirs[spec.label] = res.run_dir
        say(f"{spec.label}: out-of-fold log loss {res.log_loss:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
        key = {"model": spec.name, "params": spec.params, "train": train_fp, "test": test_fp}
        out = cfg.out_dir / "test" / f"{spec.label}.parquet"
        key_file = out.with_suffix(".key.json")
        if out.exists() and key_file.exists() and json.loads(key_file.read_text()) == key:
            frame = pl.read_parquet(out)
            if frame["id"].to_list() == test.ids:
                test_logits[spec.label] = frame.select(LOGIT_COLUMNS).to_numpy()
                say(f"{spec.label}: test logits reused")
                continue
        t0 = time.perf_counter()
        model = build_model(spec.name, spec.params)
        set_work_dir(model, cfg.out_dir / "fit" / spec.label)
        model.fit(train)
        logits = check_logits(model.predict_logits(test), len(test), spec.label)
        frame = pl.DataFrame({"id": test.ids}).with_columns(
            [pl.Series(c, logits[:, i]) for i, c in enumerate(LOGIT_COLUMNS)])
        with atomic_path(out) as tmp:
            frame.write_parquet(tmp)
        write_json_atomic(key_file, key)
        test_logits[spec.label] = logits
        say(f"{spec.label}: refitted on all {len(train)} rows, predicted {len(test)} test rows "
            f"({time.perf_counter() - t0:.0f} s)")
    return oof_dirs, test_logits


def _stack_features(cfg: RunConfig, table):
    from prefpred.stack import length_features

    return length_features(table) if cfg.stack_features == "length" else None


def _choose(scores: pl.DataFrame, models: list[str], calibrations: list[str]) -> tuple[str, str]:
    overall = scores.filter((pl.col("group") == "ALL") & pl.col("model").is_in(models)
                            & pl.col("calibration").is_in(calibrations))
    best = overall.sort("log_loss").row(0, named=True)
    return best["model"], best["calibration"]


def run(config: str | Path | RunConfig, *, progress: bool = True, say=print) -> RunResult:
    """Run every stage of a configuration; see the module docstring."""
    from prefpred import __version__
    from prefpred.calibration import calibrate_out_of_fold, make_calibrator, pair_lengths
    from prefpred.io import git_commit, write_json_atomic
    from prefpred.metrics import score_by, softmax
    from prefpred.stack import evaluate_stack, fit_stacker, load_stack_data
    from prefpred.submission import write_submission
    from prefpred.workflow import files_fingerprint

    cfg = config if isinstance(config, RunConfig) else load_run_config(config)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    comp, sub_comp, train, test, labelled_test, test_path = _load_tables(cfg, say)
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    oof_dirs, test_logits = _base_models(cfg, comp, train, test, say)
    timings["base models"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- stack
    t0 = time.perf_counter()
    features = _stack_features(cfg, train)
    data = load_stack_data(oof_dirs, features=features, sample_weight=None)
    length_by_id = dict(zip(train.ids, pair_lengths(train), strict=True))
    lengths = np.array([length_by_id[i] for i in data.ids])
    base_labels = [m.label for m in cfg.models]
    candidates = [] if cfg.stack == "none" else (
        list(cfg.stack_candidates) if cfg.stack == "auto" else [cfg.stack])
    if len(base_labels) == 1:
        candidates = [c for c in candidates if c != "blend"]
    cal_candidates = (["none"] if cfg.calibration == "none" else
                      list(cfg.calibration_candidates) if cfg.calibration == "auto"
                      else [cfg.calibration])
    report = evaluate_stack(data, stackers=candidates, calibrations=["none", *cal_candidates],
                            lengths=lengths, progress=progress)
    stacked_names = [("blend" if c == "blend" else f"stack:{c}") for c in candidates]
    pool = stacked_names if candidates else base_labels
    # "auto" may also keep the uncalibrated output: out-of-fold calibration can lose a little
    allowed = ["none", *cal_candidates] if cfg.calibration == "auto" else cal_candidates
    final_model, final_cal = _choose(report.scores, pool, allowed)
    timings["stack + calibrate (out of fold)"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- refit stack + calibrator
    t0 = time.perf_counter()
    test_features = _stack_features(cfg, test)
    if final_model in base_labels:
        final_oof = data.logits[final_model]
        final_test = test_logits[final_model]
        stacker = None
    else:
        kind = "blend" if final_model == "blend" else final_model.split(":", 1)[1]
        stacker = fit_stacker(kind, data)
        final_oof = report.oof_logits[final_model]
        final_test = stacker.predict_logits(test_logits, test_features)
    calibrator = make_calibrator(final_cal)
    calibrator.fit(final_oof, data.y, lengths=lengths)
    test_lengths = pair_lengths(test)
    test_proba = softmax(calibrator.transform(final_test, lengths=test_lengths))
    oof_calibrated = (final_oof if final_cal == "none" else calibrate_out_of_fold(
        final_oof, data.y, data.folds, final_cal, lengths=lengths))
    model_dir = cfg.out_dir / "final"
    model_dir.mkdir(parents=True, exist_ok=True)
    if stacker is not None:
        stacker.save(model_dir / "stacker.json")
    calibrator.save(model_dir / "calibrator.json")
    timings["refit stack + calibrator"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- submission
    t0 = time.perf_counter()
    final_oof_scores = score_by(data.y, softmax(oof_calibrated), data.sources)
    final_ll = float(final_oof_scores.filter(pl.col("group") == "ALL")["log_loss"][0])
    submission = cfg.submission or (cfg.out_dir / "submission.csv")
    provenance = {
        "prefpred_version": __version__,
        "git_commit": git_commit(Path(__file__).parent),
        "run_config": cfg.to_json(),
        "final": {"model": final_model, "calibration": final_cal,
                  "oof_log_loss": final_ll},
        "base_models": [{"label": m.label, "model": m.name, "params": m.params}
                        for m in cfg.models],
        "train_rows": len(train),
        "test_rows": len(test),
        "data": {"train": {k: v for p in (list(cfg.train) or [s.resolve() for s in comp.train])
                           for k, v in files_fingerprint([p]).items()},
                 "test": files_fingerprint([test_path])},
        "train_table_fingerprint": train.fingerprint(),
        "cv_scores": report.scores.filter(pl.col("group") == "ALL").to_dicts(),
    }
    write_submission(submission, test, test_proba, sub_comp, provenance)
    say(f"submission: {submission} ({len(test)} rows, validated)")
    holdout_scores = None
    if labelled_test is not None:
        y_test = labelled_test.require_labels("scoring the test file")
        holdout_scores = score_by(y_test, test_proba, labelled_test.column("source").to_numpy())
    timings["submission"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- report
    t0 = time.perf_counter()
    from prefpred.report import write_report

    report_path = cfg.report or (cfg.out_dir / "report.html")
    timings["report"] = 0.0
    timings["total"] = time.perf_counter() - t_start
    write_report(
        report_path,
        config=cfg,
        train=train,
        data=data,
        scores=report.scores,
        oof_logits=report.oof_logits,
        final_model=final_model,
        final_calibration=final_cal,
        final_oof_calibrated=oof_calibrated,
        lengths=lengths,
        holdout_scores=holdout_scores,
        submission=submission,
        timings=timings,
        calibrator=calibrator,
        stacker=stacker,
        work_dirs={m.label: cfg.out_dir / "fit" / m.label for m in cfg.models},
    )
    timings["report"] = time.perf_counter() - t0
    write_json_atomic(cfg.out_dir / "run.json", {
        "final": {"model": final_model, "calibration": final_cal, "oof_log_loss": final_ll},
        "timings_s": timings, "submission": str(submission), "report": str(report_path),
        "holdout": None if holdout_scores is None else holdout_scores.to_dicts(),
    })
    say(f"report: {report_path}")
    return RunResult(cfg, submission, report_path, f"{final_model} + {final_cal}",
                     report.scores, final_ll, holdout_scores, timings)
