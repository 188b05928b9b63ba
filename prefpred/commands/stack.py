"""``prefpred calibrate`` and ``prefpred stack``: calibrators and stackers on the out-of-fold
logits that ``prefpred cv`` writes, with out-of-fold scores, saved models and reliability PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CompetitionOpt = Annotated[str | None, typer.Option(
    "--competition", "-c", help="Competition whose training table gives pair lengths (needed "
    "by temperature_by_length and --features).")]


def _lengths_for(competition: str | None, ids: list[str]):
    if competition is None:
        return None
    import polars as pl

    from prefpred.calibration import pair_lengths
    from prefpred.config import load_competition
    from prefpred.errors import DataError

    table = load_competition(competition).load_train()
    by_id = pl.DataFrame({"id": table.ids, "n": pair_lengths(table)})
    joined = pl.DataFrame({"id": ids}).join(by_id, on="id", how="left", maintain_order="left")
    if joined["n"].is_null().any():
        missing = joined.filter(pl.col("n").is_null())["id"][0]
        raise DataError(f"id {missing!r} of the out-of-fold logits is not in {competition}'s "
                        "training data", column="id")
    return joined["n"].to_numpy()


def calibrate_command(
    oof: Annotated[Path, typer.Option("--oof", help="oof.parquet (or its run folder) from "
                                      "`prefpred cv`.")],
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="temperature, vector, temperature_by_length (repeatable); the first "
        "is saved. Default: temperature and vector.")] = None,
    competition: CompetitionOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for calibrator.json, "
                                             "scores.csv and reliability.png.")] = None,
) -> None:
    """Out-of-fold calibrated scores per method and source; save the first method's calibrator
    (fitted on all out-of-fold rows) and a reliability diagram."""
    from prefpred.calibration import (
        calibrate_out_of_fold,
        evaluate_calibration,
        make_calibrator,
        oof_arrays,
        plot_reliability,
    )
    from prefpred.errors import ConfigError
    from prefpred.metrics import format_scores, softmax
    from prefpred.rewards.io import write_frame

    path = oof / "oof.parquet" if oof.is_dir() else oof
    arrays = oof_arrays(path)
    methods = list(method or ["temperature", "vector"])
    for m in methods:
        make_calibrator(m)  # fails fast on a bad name
    lengths = _lengths_for(competition, arrays.ids)
    if "temperature_by_length" in methods and lengths is None:
        raise ConfigError("temperature_by_length needs --competition (for the pair lengths)")
    table = evaluate_calibration(arrays.logits, arrays.y, arrays.folds, arrays.sources,
                                 ["none", *methods], lengths=lengths)
    typer.echo(format_scores(table.drop("ece_A", "ece_B", "ece_TIE"),
                             title=f"{path}: out-of-fold calibrated scores"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cal = make_calibrator(methods[0]).fit(arrays.logits, arrays.y, lengths=lengths)
        cal.save(out / "calibrator.json")
        write_frame(table, out / "scores.csv")
        calibrated = calibrate_out_of_fold(arrays.logits, arrays.y, arrays.folds, methods[0],
                                           lengths=lengths)
        plot_reliability(arrays.y, {"uncalibrated": softmax(arrays.logits),
                                    methods[0]: softmax(calibrated)},
                         out / "reliability.png", title=f"{path.parent.name}: out of fold")
        typer.echo(f"wrote {out}/calibrator.json ({methods[0]}, fitted on {len(arrays.y)} "
                   "out-of-fold rows), scores.csv, reliability.png")


def stack_command(
    oof: Annotated[list[str], typer.Option("--oof", help="NAME=PATH of a base model's "
                                           "oof.parquet or run folder (repeatable).")],
    stacker: Annotated[list[str] | None, typer.Option(
        "--stacker", help="blend, logistic, lgbm (repeatable; default all). The first is "
        "saved.")] = None,
    calibration: Annotated[str, typer.Option("--calibration", help="Calibration on top: none, "
                                             "temperature, vector, temperature_by_length.")]
    = "temperature",
    features: Annotated[bool, typer.Option("--features", help="Give the stackers pair length "
                                           "features (needs --competition).")] = False,
    competition: CompetitionOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for stacker.json, "
                                             "calibrator.json, scores.csv, reliability.png.")]
    = None,
) -> None:
    """Blend and stack base models on their out-of-fold logits (nested CV), calibrate on top."""
    import polars as pl

    from prefpred.calibration import calibrate_out_of_fold, make_calibrator, plot_reliability
    from prefpred.config import load_competition
    from prefpred.errors import ConfigError
    from prefpred.metrics import format_scores, softmax
    from prefpred.rewards.io import write_frame
    from prefpred.stack import evaluate_stack, fit_stacker, length_features, load_stack_data

    sources = {}
    for item in oof:
        if "=" not in item:
            raise ConfigError(f"--oof {item!r} is not NAME=PATH")
        name, path = item.split("=", 1)
        sources[name.strip()] = Path(path)
    stackers = list(stacker or ["blend", "logistic", "lgbm"])
    if features and competition is None:
        raise ConfigError("--features needs --competition (the table the features come from)")
    make_calibrator(calibration)
    feats = length_features(load_competition(competition).load_train()) if features else None
    data = load_stack_data(sources, features=feats)
    lengths = _lengths_for(competition, data.ids)
    if calibration == "temperature_by_length" and lengths is None:
        raise ConfigError("temperature_by_length needs --competition (for the pair lengths)")
    report = evaluate_stack(data, stackers=stackers, calibrations=[calibration],
                            lengths=lengths)
    overall = report.scores.filter(pl.col("group") == "ALL").drop("group", "ece_A", "ece_B",
                                                                    "ece_TIE")
    typer.echo(format_scores(overall, title="out-of-fold scores (nested CV for the stacks)"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        first = stackers[0]
        fit_stacker(first, data).save(out / "stacker.json")
        key = "blend" if first == "blend" else f"stack:{first}"
        stacked = report.oof_logits[key]
        make_calibrator(calibration).fit(stacked, data.y, lengths=lengths).save(
            out / "calibrator.json")
        write_frame(report.scores, out / "scores.csv")
        calibrated = calibrate_out_of_fold(stacked, data.y, data.folds, calibration,
                                           lengths=lengths)
        plot_reliability(data.y, {f"{key} (raw)": softmax(stacked),
                                  f"{key} + {calibration}": softmax(calibrated)},
                         out / "reliability.png", title="stack: out of fold")
        typer.echo(f"wrote {out}/stacker.json ({first}), calibrator.json ({calibration}, fitted "
                   f"on the stack's out-of-fold logits), scores.csv, reliability.png")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
    app.command("stack")(stack_command)
