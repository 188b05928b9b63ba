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
             (the scores of stages 3-4 are kept in ``stack/`` and reused while the out-of-fold
             files and the [stack] / [calibration] choices are unchanged)
5. submit    the submission written atomically, validated, with provenance
6. report    ``report.html``: scores per model and source, reliability diagrams, loss by length,
             confusion matrix, feature importances, timings (the submission and the report are
             kept while every input to them is unchanged: ``run.json`` holds their key)

Stage 2 is where the time goes; a re-run of an unchanged configuration reuses every stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefpred.errors import ConfigError
from prefpred.io import json_digest
from prefpred.run_config import RunConfig, read_run_config


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


def check_run_outputs(cfg: RunConfig, submission: Path, report: Path) -> None:
    """Before any work: no output may replace an input (the config, a training or test file),
    the outputs must be distinct files in writable folders."""
    from prefpred.competitions import load_competition
    from prefpred.io import check_output

    inputs = [p for p in (cfg.file, cfg.test) if p is not None]
    inputs += list(cfg.train) or [s.resolve() for s in load_competition(cfg.competition).train]
    check_output(cfg.out_dir, inputs=inputs, folder=True, what="[run] out_dir")
    outputs = {"submission": submission, "report": report, "run record": cfg.out_dir / "run.json"}
    if cfg.holdout is not None:
        outputs["hold-out test file"] = cfg.out_dir / "data" / "test.csv"
    for what, path in outputs.items():
        check_output(path, inputs=inputs, what=f"[output] {what}")
    resolved = [p.expanduser().resolve() for p in outputs.values()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"{cfg.file}: [output] submission and report must be different files "
                          "(and not the run's own data/test.csv or run.json)")


def _load_tables(cfg: RunConfig, say):
    """(competition, train table, test table, test labels table or None, test file path)."""
    from prefpred.competitions import load_competition
    from prefpred.data.export import split_holdout, write_holdout

    comp = load_competition(cfg.competition)
    sub_comp = load_competition(cfg.submission_competition)
    train = comp.load_train(list(cfg.train) or None)
    if not train.tie_allowed().any():
        from prefpred.errors import DataError

        raise DataError("every training pair was judged without a tie option: prefpred run stacks "
                        "and calibrates three-way probabilities on three-class rows, and there "
                        "are none", file=train.origin, column="tie_allowed",
                        fix="use prefpred cv and prefpred submit for two-class data")
    if cfg.holdout is not None:
        h = cfg.holdout
        train, held = split_holdout(train, source=h.source, fraction=h.fraction, seed=h.seed)
        test_path = write_holdout(cfg.out_dir / "data", held)[0]
        test = sub_comp.load_test(test_path)
        say(f"hold-out: {len(held)} test rows ({h.source or 'all sources'}), "
            f"{len(train)} training rows")
        return comp, sub_comp, train, test, held, test_path
    test_path = Path(cfg.test)
    test = sub_comp.load_test(test_path)
    labels = test if test.is_labelled else None
    return comp, sub_comp, train, test, labels, test_path


def _base_model(cfg, comp, train, test, spec, say, plan=None
                ) -> tuple[Path, np.ndarray, list[Path]]:
    """One base model: its out-of-fold run, its test logits (each reused when unchanged) and
    the saved model folders that predict new rows (``models/<label>``, the refit on all
    training rows; or, for ``[ensemble] method = "folds"``, every fold's model, whose logits
    are averaged, or one model whose weights are the folds' average)."""
    from prefpred.models.base import load_model
    from prefpred.stages import cross_validate, fit_predict

    t0 = time.perf_counter()
    folds = cfg.ensemble == "folds"
    distill = plan if cfg.distill is not None and spec.label in cfg.distill.students else None
    res = cross_validate(train, comp, spec.name, spec.params, run_dir=cfg.out_dir / "cv",
                         n_folds=cfg.folds, seed=cfg.seed, label=spec.label,
                         progress=cfg.jobs == 1, save_models=folds, distill=distill)
    fit_rows = train if distill is None else distill.full_table(train)
    say(f"{spec.label}: out-of-fold log loss {res.log_loss:.4f} "
        f"({time.perf_counter() - t0:.0f} s)")
    if not folds:
        saved = cfg.out_dir / "models" / spec.label
        logits = fit_predict(fit_rows, test, spec.name, spec.params,
                             work_dir=cfg.out_dir / "fit" / spec.label,
                             cache=cfg.out_dir / "test" / f"{spec.label}.parquet", say=say,
                             label=spec.label, save_to=saved)
        return res.run_dir, logits, [saved]
    from prefpred.io import file_sha256, write_json_atomic
    from prefpred.models.base import MODEL_FILE
    from prefpred.stages import cached_logits

    dirs = [res.run_dir / f"fold_{k}_model" for k in sorted(set(res.folds.tolist()))]
    if cfg.average_weights and spec.name == "backbone":
        from prefpred.models.backbone.artifacts import average_saved_models

        averaged = cfg.out_dir / "models" / spec.label
        sources = {str(d): file_sha256(d / MODEL_FILE) for d in dirs}
        if _read_sources(averaged) != sources:
            average_saved_models(dirs, averaged)
            write_json_atomic(averaged.with_name(f"{spec.label}.sources.json"), sources)
        dirs = [averaged]

    def compute() -> np.ndarray:
        t0 = time.perf_counter()
        logits = np.mean([load_model(d).predict_logits(test) for d in dirs], axis=0)
        say(f"{spec.label}: {len(dirs)} fold model(s) predicted {len(test)} test rows "
            f"({time.perf_counter() - t0:.0f} s)")
        return logits

    key = {"models": {str(d): file_sha256(Path(d) / MODEL_FILE) for d in dirs},
           "test": test.fingerprint()}
    logits = cached_logits(cfg.out_dir / "test" / f"{spec.label}.folds.parquet", key, test,
                           compute, say=say, label=spec.label)
    return res.run_dir, logits, dirs


def _read_sources(averaged: Path) -> dict | None:
    """The fold models an averaged model was made from (None: none recorded, or no model)."""
    from prefpred.models.base import MODEL_FILE

    file = averaged.with_name(f"{averaged.name}.sources.json")
    if not (averaged / MODEL_FILE).is_file() or not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        return None


def _base_model_job(args) -> tuple[Path, np.ndarray, list[Path], list[str]]:
    """:func:`_base_model` in a worker process; its messages come back with the result."""
    messages: list[str] = []
    *head, plan = args
    return (*_base_model(*head, say=messages.append, plan=plan), messages)


def _base_models(cfg, comp, train, test, say, plan=None
                 ) -> tuple[dict[str, Path], dict[str, np.ndarray], dict[str, list[Path]]]:
    """Out-of-fold runs and test logits of every base model (reused when unchanged), one at a
    time, or ``[run] jobs`` at a time in worker processes (submitted in config order: list the
    slowest first; each model's files are its own, so the results are the same)."""
    if cfg.jobs == 1 or len(cfg.models) == 1:
        done = {spec.label: _base_model(cfg, comp, train, test, spec, say, plan)
                for spec in cfg.models}
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no forked threads (polars, torch)
        with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(cfg.models)),
                                 mp_context=context) as pool:
            futures = {spec.label: pool.submit(_base_model_job,
                                               (cfg, comp, train, test, spec, plan))
                       for spec in cfg.models}
            done = {}
            for label, future in futures.items():
                *result, messages = future.result()
                for message in messages:
                    say(message)
                done[label] = tuple(result)
    return ({label: d[0] for label, d in done.items()},
            {label: d[1] for label, d in done.items()},
            {label: d[2] for label, d in done.items()})


def _write_pipeline(cfg, sub_comp, model_dirs, stacker, calibrator, info) -> None:
    """The fitted pipeline (``pipeline.json`` in the run folder, the stacker, calibrator and
    submission competition in ``final/``): what ``prefpred predict`` and ``prefpred bundle``
    read."""
    from prefpred.predictor import write_pipeline

    final = cfg.out_dir / "final"
    final.mkdir(parents=True, exist_ok=True)
    if stacker is not None:
        stacker.save(final / "stacker.json")
    else:
        (final / "stacker.json").unlink(missing_ok=True)
    calibrator.save(final / "calibrator.json")
    from prefpred.io import write_text_atomic

    write_text_atomic(final / "competition.toml", Path(sub_comp.file).read_text("utf-8"))
    # without a stacker the final model is one base model: the pipeline holds only that one
    chosen = [m for m in cfg.models if stacker is not None or m.label == info["final_model"]]
    base = [{"label": m.label, "model": m.name,
             "dirs": [str(Path(d).relative_to(cfg.out_dir)) for d in model_dirs[m.label]]}
            for m in chosen]
    write_pipeline(cfg.out_dir, base_models=base,
                   stacker="final/stacker.json" if stacker is not None else None,
                   stack_features=cfg.stack_features, calibrator="final/calibrator.json",
                   competition="final/competition.toml",
                   info={**info, "ensemble": cfg.ensemble, "run": cfg.name})


def _load_evaluation(folder: Path, key: dict, data):
    """The stack and calibration evaluation of an earlier run with the same inputs, or None
    (missing, stale or unreadable: recomputed)."""
    from prefpred.io import read_back
    from prefpred.stack import Evaluation

    if read_back(folder / "key.json", lambda p: json.loads(p.read_text()),
                 "the stacking key") != json.loads(json.dumps(key, default=str)):
        return None
    scores = read_back(folder / "scores.parquet", pl.read_parquet, "the stacking scores")
    logits = read_back(folder / "oof_logits.npz", lambda p: dict(np.load(p)),
                       "the stacked out-of-fold logits",
                       check=lambda z: all(v.shape == (len(data), 3) and np.isfinite(v).all()
                                           for v in z.values()))
    if scores is None or logits is None:
        return None
    return Evaluation(scores=scores, oof_logits=logits)


def _save_evaluation(folder: Path, key: dict, report) -> None:
    from prefpred.io import atomic_paths

    with atomic_paths(folder / "scores.parquet", folder / "oof_logits.npz",
                      folder / "key.json") as (scores, logits, key_file):
        report.scores.write_parquet(scores)
        with open(logits, "wb") as fh:
            np.savez(fh, **report.oof_logits)
        key_file.write_text(json.dumps(key, sort_keys=True, default=str))


def _reuse_outputs(record: Path, key: str, submission: Path, report: Path) -> dict | None:
    """The run record of an earlier run whose submission and report came from the same inputs
    (all its files still there), or None."""
    from prefpred.io import read_back
    from prefpred.submission import provenance_path

    if not all(p.is_file() for p in (record, submission, provenance_path(submission), report)):
        return None
    saved = read_back(record, lambda p: json.loads(p.read_text()), "the run record")
    if not isinstance(saved, dict) or saved.get("inputs") != key:
        return None
    return saved


def _stack_features(cfg: RunConfig, table):
    from prefpred.features.lengths import length_features

    return length_features(table) if cfg.stack_features == "length" else None


def _distillation_scores(cfg: RunConfig, plan, train, data, scores: pl.DataFrame
                         ) -> pl.DataFrame:
    """Teacher, distilled students and the models left alone, side by side (out of fold, the
    rows the stack scores)."""
    from prefpred.metrics import score
    from prefpred.probabilities import softmax

    where = {i: n for n, i in enumerate(train.ids)}
    rows = [where[i] for i in data.ids]
    teacher = score(data.y, softmax(plan.logits.outer[rows]))
    out = [{"model": plan.teacher.name, "role": "teacher (refitted, out of fold)",
            "log_loss": teacher["log_loss"], "accuracy": teacher["accuracy"]}]
    overall = scores.filter((pl.col("group") == "ALL") & (pl.col("calibration") == "none"))
    for m in cfg.models:
        hit = overall.filter(pl.col("model") == m.label)
        if hit.height:
            role = ("student, distilled" if m.label in cfg.distill.students
                    else "student alone (not distilled)")
            out.append({"model": m.label, "role": role, "log_loss": hit["log_loss"][0],
                        "accuracy": hit["accuracy"][0]})
    return pl.DataFrame(out)


def _choose(scores: pl.DataFrame, models: list[str], calibrations: list[str]) -> tuple[str, str]:
    overall = scores.filter((pl.col("group") == "ALL") & pl.col("model").is_in(models)
                            & pl.col("calibration").is_in(calibrations))
    best = overall.sort("log_loss").row(0, named=True)
    return best["model"], best["calibration"]


def run(config: str | Path | RunConfig, *, progress: bool = True, say=print) -> RunResult:
    """Run every stage of a configuration; see the module docstring."""
    from prefpred import __version__
    from prefpred.calibration import calibrate_out_of_fold, make_calibrator
    from prefpred.features.lengths import pair_lengths
    from prefpred.io import atomic_paths, file_sha256
    from prefpred.metrics import score_by
    from prefpred.oof import OOF_FILE, align_by_id, join_oof
    from prefpred.probabilities import softmax
    from prefpred.stack import BLEND, evaluate, fit_stacker, stack_label, stacker_of
    from prefpred.stages import build_provenance
    from prefpred.submission import provenance_path, stage_submission

    cfg = config if isinstance(config, RunConfig) else read_run_config(config)
    submission = cfg.submission or (cfg.out_dir / "submission.csv")
    report_path = cfg.report or (cfg.out_dir / "report.html")
    check_run_outputs(cfg, submission, report_path)
    plan = None if cfg.distill is None else cfg.distill.build()  # teacher + pseudo read first
    if plan is not None:
        plan.check_output(cfg.out_dir)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    comp, sub_comp, train, test, labelled_test, test_path = _load_tables(cfg, say)
    timings["data"] = time.perf_counter() - t0
    cfg.out_dir.mkdir(parents=True, exist_ok=True)  # after the data is read and checked

    if plan is not None:
        from prefpred.data.folds import assign_folds

        t0 = time.perf_counter()
        say(plan.summary())
        plan.prepare(train, assign_folds(train, cfg.folds or comp.n_folds,
                                         comp.seed if cfg.seed is None else cfg.seed),
                     cfg.out_dir / "teacher", say=say)
        timings["teacher (nested refits)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    oof_dirs, test_logits, model_dirs = _base_models(cfg, comp, train, test, say, plan)
    timings["base models"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- stack
    t0 = time.perf_counter()
    data = join_oof(oof_dirs, features=_stack_features(cfg, train))
    if train.column("soft_label").null_count() < len(train):  # the stackers fit soft targets
        where = {i: n for n, i in enumerate(train.ids)}
        data.soft = train.soft_label_rows()[[where[i] for i in data.ids]]
    if not train.tie_allowed().all():
        # pairs judged without a tie option train the base models; the stacker and calibrator
        # map to three-way probabilities and learn from three-class rows only
        three = set(train.filter(pl.col("tie_allowed")).ids)
        data = data.take(np.array([i in three for i in data.ids]))
        say(f"stacking and calibration on the {len(data)} three-class rows (the "
            f"{len(train) - len(three)} two-class rows trained the base models only)")
    lengths = align_by_id(pl.DataFrame({"id": train.ids, "n": pair_lengths(train)}), data.ids,
                          missing="has no training row")["n"].to_numpy()
    base_labels = [m.label for m in cfg.models]
    candidates = [] if cfg.stack == "none" else (
        list(cfg.stack_candidates) if cfg.stack == "auto" else [cfg.stack])
    if len(base_labels) == 1:
        candidates = [c for c in candidates if c != BLEND]
    cal_candidates = (["none"] if cfg.calibration == "none" else
                      list(cfg.calibration_candidates) if cfg.calibration == "auto"
                      else [cfg.calibration])
    stack_key = {"oof": {label: file_sha256(Path(d) / OOF_FILE) for label, d in oof_dirs.items()},
                 "train": train.fingerprint(), "stackers": candidates,
                 "calibrations": cal_candidates, "features": cfg.stack_features,
                 "prefpred": __version__}
    report = _load_evaluation(cfg.out_dir / "stack", stack_key, data)
    if report is None:
        report = evaluate(data, stackers=candidates, calibrations=["none", *cal_candidates],
                          lengths=lengths, progress=progress)
        _save_evaluation(cfg.out_dir / "stack", stack_key, report)
    else:
        say("stacking and calibration scores reused")
    pool = [stack_label(c) for c in candidates] if candidates else base_labels
    # "auto" may also keep the uncalibrated output: out-of-fold calibration can lose a little
    allowed = ["none", *cal_candidates] if cfg.calibration == "auto" else cal_candidates
    final_model, final_cal = _choose(report.scores, pool, allowed)
    timings["stack + calibrate (out of fold)"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- refit stack + calibrator
    t0 = time.perf_counter()
    stacker = None
    if final_model in base_labels:
        final_oof = data.logits[final_model]
        final_test = test_logits[final_model]
    else:
        stacker = fit_stacker(stacker_of(final_model), data)
        final_oof = report.oof_logits[final_model]
        final_test = stacker.predict_logits(test_logits, _stack_features(cfg, test))
    calibrator = make_calibrator(final_cal)
    calibrator.fit(final_oof, data.y, lengths=lengths)
    test_proba = calibrator.predict_proba(final_test, lengths=pair_lengths(test))
    oof_calibrated = (final_oof if final_cal == "none" else calibrate_out_of_fold(
        final_oof, data.y, data.folds, final_cal, lengths=lengths))
    _write_pipeline(cfg, sub_comp, model_dirs, stacker, calibrator,
                    {"final_model": final_model, "calibration": final_cal})
    timings["refit stack + calibrator"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- submission + report
    t0 = time.perf_counter()
    outputs_key = json_digest({"stack": stack_key, "final": [final_model, final_cal],
                           "test_logits": {k: json_digest(v.tolist()) for k, v in
                                           sorted(test_logits.items())},
                           "test": test.fingerprint(), "config": cfg.to_json(),
                           "holdout": labelled_test is not None})
    reused = _reuse_outputs(cfg.out_dir / "run.json", outputs_key, submission, report_path)
    if reused is not None:
        timings["submission + report (reused)"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        say(f"submission and report reused: {submission}, {report_path}")
        return RunResult(cfg, submission, report_path, f"{final_model} + {final_cal}",
                         report.scores, reused["final"]["oof_log_loss"],
                         None if reused["holdout"] is None else pl.DataFrame(reused["holdout"]),
                         timings)
    final_oof_scores = score_by(data.y, softmax(oof_calibrated), data.sources)
    final_ll = float(final_oof_scores.filter(pl.col("group") == "ALL")["log_loss"][0])
    provenance = build_provenance(
        test_paths=[test_path],
        train_paths=list(cfg.train) or [s.resolve() for s in comp.train],
        train=train, test=test, run_config=cfg.to_json(),
        final={"model": final_model, "calibration": final_cal, "oof_log_loss": final_ll},
        base_models=[{"label": m.label, "model": m.name, "params": m.params}
                     for m in cfg.models],
        cv_scores=report.scores.filter(pl.col("group") == "ALL").to_dicts())
    holdout_scores = None
    if labelled_test is not None:
        y_test = labelled_test.require_labels("scoring the test file")
        holdout_scores = score_by(y_test, test_proba, labelled_test.column("source").to_numpy())
    timings["submission"] = time.perf_counter() - t0

    distillation = None if plan is None else _distillation_scores(cfg, plan, train, data,
                                                                  report.scores)
    from prefpred.report import render_report

    t0 = time.perf_counter()
    html = render_report(
        config=cfg, train=train, data=data, scores=report.scores,
        oof_logits=report.oof_logits, final_model=final_model, final_calibration=final_cal,
        final_oof_calibrated=oof_calibrated, lengths=lengths, holdout_scores=holdout_scores,
        submission=submission, timings=timings, started=t_start, calibrator=calibrator,
        stacker=stacker, distillation=distillation,
        work_dirs={m.label: cfg.out_dir / "fit" / m.label for m in cfg.models})
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    record = {
        "inputs": outputs_key,
        "final": {"model": final_model, "calibration": final_cal, "oof_log_loss": final_ll},
        "timings_s": timings, "submission": str(submission), "report": str(report_path),
        "holdout": None if holdout_scores is None else holdout_scores.to_dicts(),
    }
    # the submission, its provenance, the report and run.json appear together or not at all
    with atomic_paths(submission, provenance_path(submission), report_path,
                      cfg.out_dir / "run.json") as (tmp_sub, tmp_prov, tmp_report, tmp_record):
        stage_submission(tmp_sub, tmp_prov, submission, test, test_proba, sub_comp, provenance)
        tmp_report.write_text(html, encoding="utf-8")
        tmp_record.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                              encoding="utf-8")
    say(f"submission: {submission} ({len(test)} rows, validated)")
    say(f"report: {report_path}")
    return RunResult(cfg, submission, report_path, f"{final_model} + {final_cal}",
                     report.scores, final_ll, holdout_scores, timings)
