"""``prefpred calibrate`` and ``prefpred stack``: calibrators and stackers on the out-of-fold
logits that ``prefpred cv`` writes, with out-of-fold scores, saved models and reliability PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LengthsCompetition = Annotated[str | None, typer.Option(
    "--competition", "-c", help="Competition whose training table gives pair lengths (needed "
    "by temperature_by_length and --features).")]


def _lengths_for(competition: str | None, ids: list[str], calibrations: list[str]):
    """Pair lengths of the competition's training rows in the order of ``ids`` (None without a
    competition, which no length-binned calibration may then need)."""
    from prefpred.calibration import make_calibrator
    from prefpred.errors import ConfigError

    if competition is None:
        needs = [c for c in calibrations if make_calibrator(c).needs_lengths]
        if needs:
            raise ConfigError(f"{needs[0]} needs --competition (for the pair lengths)")
        return None
    import polars as pl

    from prefpred.competitions import load_competition
    from prefpred.features.lengths import pair_lengths
    from prefpred.oof import align_by_id

    table = load_competition(competition).load_train()
    by_id = pl.DataFrame({"id": table.ids, "n": pair_lengths(table)})
    return align_by_id(by_id, ids, missing=f"of the out-of-fold logits is not in {competition}'s "
                       "training data")["n"].to_numpy()


def _write_outputs(out: Path, data, logits, key: str, calibration: str, lengths, scores,
                   stacker=None) -> None:
    """The saved calibrator (and stacker), the scores table and a reliability PNG in ``out``,
    written together (all or none)."""
    from prefpred.calibration import calibrate_out_of_fold, make_calibrator
    from prefpred.io import atomic_paths
    from prefpred.probabilities import softmax
    from prefpred.report import reliability_png

    calibrator = make_calibrator(calibration).fit(logits, data.y, lengths=lengths)
    calibrated = calibrate_out_of_fold(logits, data.y, data.folds, calibration, lengths=lengths)
    png = reliability_png(data.y, {f"{key} (raw)": softmax(logits),
                                   f"{key} + {calibration}": softmax(calibrated)},
                          title=f"{key}: out of fold")
    texts = {"calibrator.json": calibrator.dumps()}
    if stacker is not None:
        texts["stacker.json"] = stacker.dumps()
    names = [*texts, "scores.csv", "reliability.png"]
    with atomic_paths(*[out / name for name in names]) as temps:
        for tmp, text in zip(temps, texts.values(), strict=False):
            tmp.write_text(text, encoding="utf-8")
        scores.write_csv(temps[-2])
        temps[-1].write_bytes(png)


def _check_out(out: Path | None, inputs: list[Path]) -> None:
    if out is not None:
        from prefpred.io import check_output

        check_output(out, inputs=inputs, folder=True, what="--out")
        for name in ("calibrator.json", "stacker.json", "scores.csv", "reliability.png"):
            check_output(out / name, inputs=inputs, what="--out")


def calibrate_command(
    oof: Annotated[Path, typer.Option("--oof", help="oof.parquet (or its run folder) from "
                                      "`prefpred cv`.")],
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="temperature, vector, temperature_by_length (repeatable); the first "
        "is saved. Default: temperature and vector.")] = None,
    competition: LengthsCompetition = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for calibrator.json, "
                                             "scores.csv and reliability.png.")] = None,
) -> None:
    """Out-of-fold calibrated scores per method and source; save the first method's calibrator
    (fitted on all out-of-fold rows) and a reliability diagram."""
    from prefpred.metrics import ECE_CLASS_COLUMNS, format_scores
    from prefpred.oof import join_oof
    from prefpred.stack import evaluate

    path = oof / "oof.parquet" if oof.is_dir() else oof
    _check_out(out, [path])
    name = path.parent.name
    data = join_oof({name: path})
    methods = list(method or ["temperature", "vector"])
    lengths = _lengths_for(competition, data.ids, methods)
    table = evaluate(data, calibrations=["none", *methods], lengths=lengths,
                     progress=False).scores.drop("model")
    typer.echo(format_scores(table.drop(ECE_CLASS_COLUMNS),
                             title=f"{path}: out-of-fold calibrated scores"))
    if out is not None:
        _write_outputs(out, data, data.logits[name], name, methods[0], lengths, table)
        typer.echo(f"wrote {out}/calibrator.json ({methods[0]}, fitted on {len(data)} "
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
    competition: LengthsCompetition = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for stacker.json, "
                                             "calibrator.json, scores.csv, reliability.png.")]
    = None,
) -> None:
    """Blend and stack base models on their out-of-fold logits (nested CV), calibrate on top."""
    import polars as pl

    from prefpred.competitions import load_competition
    from prefpred.errors import ConfigError
    from prefpred.features.lengths import length_features
    from prefpred.metrics import ECE_CLASS_COLUMNS, format_scores
    from prefpred.oof import join_oof
    from prefpred.stack import evaluate, fit_stacker, stack_label

    sources = {}
    for item in oof:
        if "=" not in item:
            raise ConfigError(f"--oof {item!r} is not NAME=PATH")
        name, path = item.split("=", 1)
        sources[name.strip()] = Path(path)
    _check_out(out, [p / "oof.parquet" if p.is_dir() else p for p in sources.values()])
    stackers = list(stacker or ["blend", "logistic", "lgbm"])
    if features and competition is None:
        raise ConfigError("--features needs --competition (the table the features come from)")
    feats = length_features(load_competition(competition).load_train()) if features else None
    data = join_oof(sources, features=feats)
    lengths = _lengths_for(competition, data.ids, [calibration])
    report = evaluate(data, stackers=stackers, calibrations=[calibration], lengths=lengths)
    overall = report.scores.filter(pl.col("group") == "ALL").drop("group", *ECE_CLASS_COLUMNS)
    typer.echo(format_scores(overall, title="out-of-fold scores (nested CV for the stacks)"))
    if out is not None:
        first = stackers[0]
        key = stack_label(first)
        _write_outputs(out, data, report.oof_logits[key], key, calibration, lengths,
                       report.scores, stacker=fit_stacker(first, data))
        typer.echo(f"wrote {out}/stacker.json ({first}), calibrator.json ({calibration}, fitted "
                   f"on the stack's out-of-fold logits), scores.csv, reliability.png")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
    app.command("stack")(stack_command)
