"""The ``prefpred`` command line. It only wires stages; the work lives in the library.

Every error a user can cause prints one line (file, row, column, fix) and exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from prefpred.errors import PrefpredError

app = typer.Typer(
    name="prefpred",
    help="Calibrated human-preference prediction (A wins / B wins / tie).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Look at data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

Model = Annotated[str, typer.Option("--model", "-m", help="Registered model name (see `prefpred list`).")]
CompetitionOpt = Annotated[str, typer.Option("--competition", "-c",
                                             help="Competition name or TOML path.")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p",
                                                    help="Model parameter key=value (repeatable).")]
ParamsFile = Annotated[str | None, typer.Option("--params", help="TOML/JSON parameter file, or "
                                                "the name of saved parameters (prefpred tune).")]
FormatOpt = Annotated[str | None, typer.Option("--format", "-f", help="Input format (default: "
                                               "detected).")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Reject repairable quirks (lone "
                                         "surrogates) instead of repairing them.")]
BackboneOpt = Annotated[str | None, typer.Option("--backbone", help="Backbone model: a local "
                                                 "folder or a bundled name (minilm, smollm2).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="Backbone run config: a TOML "
                                               "file or a preset name (minilm-budget, ...).")]


def _echo(text: str) -> None:
    typer.echo(text)


@app.command("list")
def list_things() -> None:
    """Formats, models and competitions this installation knows."""
    from prefpred.config import list_competitions
    from prefpred.data.adapters import FORMATS
    from prefpred.models.base import model_names

    _echo("formats:")
    for f in FORMATS.values():
        _echo(f"  {f.name:<22} {f.description}")
    _echo("models: " + ", ".join(model_names()))
    _echo("competitions: " + ", ".join(list_competitions()))


@data_app.command("inspect")
def data_inspect(
    file: Annotated[Path, typer.Argument(help="Data file or MT-Bench folder.")],
    format: FormatOpt = None,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rows, label balance, turn counts, length percentiles and the quirks found."""
    from prefpred.data.adapters import load_table
    from prefpred.data.inspect import describe, render

    info = describe(load_table(file, format, strict=strict))
    _echo(json.dumps(info, indent=2) if as_json else render(info))


@app.command("cv")
def cv_command(
    competition: CompetitionOpt,
    model: Model = "prior",
    data: Annotated[list[Path] | None, typer.Option("--data", "-d", help="Training file(s) "
                                                    "instead of the competition's.")] = None,
    format: FormatOpt = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Number of folds.")] = None,
    only_fold: Annotated[list[int] | None, typer.Option("--only-fold", help="Run only this fold "
                                                        "(repeatable).")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    param: ParamOpt = None,
    params: ParamsFile = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where out-of-fold logits go.")] = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume/--no-resume")] = True,
    strict: StrictOpt = False,
    backbone: BackboneOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Grouped K-fold cross-validation: out-of-fold scores overall and per source."""
    from prefpred.config import load_competition
    from prefpred.metrics import format_scores
    from prefpred.models.backbone.config import apply_cli_options
    from prefpred.workflow import cross_validate, load_params

    comp = load_competition(competition)
    model, model_params = apply_cli_options(model, load_params(params, param), backbone, config)
    table = comp.load_train(data, format, strict=strict)
    result = cross_validate(table, comp, model, model_params, run_dir=run_dir / comp.name,
                            n_folds=folds, seed=seed, only_folds=only_fold, resume=resume)
    _echo(format_scores(result.scores, title=f"{comp.name} / {model}: out-of-fold scores"))
    _echo(f"out-of-fold logits: {result.run_dir / 'oof.parquet'}")


@app.command("submit")
def submit_command(
    competition: CompetitionOpt,
    train: Annotated[list[Path], typer.Option("--train", help="Training file(s).")],
    test: Annotated[Path, typer.Option("--test", help="Test file to predict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Submission CSV to write.")],
    model: Model = "prior",
    format: FormatOpt = None,
    test_format: Annotated[str | None, typer.Option("--test-format")] = None,
    param: ParamOpt = None,
    params: ParamsFile = None,
    cv_folds: Annotated[int, typer.Option("--cv-folds", help="Folds of the CV whose scores go "
                                          "into the provenance (0: skip CV).")] = 5,
    run_dir: Annotated[Path, typer.Option("--run-dir")] = Path("runs"),
    strict: StrictOpt = False,
    backbone: BackboneOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fit on all of TRAIN, predict TEST, write and validate the submission."""
    from prefpred.config import load_competition
    from prefpred.models.backbone.config import apply_cli_options
    from prefpred.workflow import cross_validate, load_params, submit

    comp = load_competition(competition)
    model, model_params = apply_cli_options(model, load_params(params, param), backbone, config)
    train_table = comp.load_train(train, format, strict=strict)
    test_table = comp.load_test(test, test_format, strict=strict)
    cv = None
    if cv_folds:
        cv = cross_validate(train_table, comp, model, model_params, run_dir=run_dir / comp.name,
                            n_folds=cv_folds)
    path = submit(comp, train_table, test_table, model=model, params=model_params, out=out,
                  train_paths=train, test_path=test, cv=cv,
                  work_dir=run_dir / comp.name / model / "full_fit_work")
    line = f"wrote {path} ({len(test_table)} rows, validated)"
    if cv is not None:
        line += f"; CV log loss {cv.log_loss:.4f}"
    _echo(line)


@app.command("validate-submission")
def validate_command(
    file: Annotated[Path, typer.Argument(help="Submission CSV.")],
    competition: CompetitionOpt,
    test: Annotated[Path, typer.Option("--test", help="The test file the submission answers.")],
    test_format: Annotated[str | None, typer.Option("--test-format")] = None,
) -> None:
    """Check a submission as the grader would; exit non-zero naming the first bad row."""
    from prefpred.config import load_competition
    from prefpred.submission import validate_submission

    comp = load_competition(competition)
    test_table = comp.load_test(test, test_format)
    report = validate_submission(file, comp, test=test_table)
    _echo(f"{file}: {report}")


@app.command("holdout")
def holdout_command(
    competition: CompetitionOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train.parquet, test.csv "
                                      "and test_labelled.csv.")],
    source: Annotated[str | None, typer.Option("--source", help="Hold out rows of this source "
                                               "only.")] = None,
    fraction: Annotated[float, typer.Option("--fraction")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    data: Annotated[list[Path] | None, typer.Option("--data", "-d")] = None,
    format: FormatOpt = None,
) -> None:
    """Split whole prompt groups off as a Kaggle-format test file, with its labels kept apart."""
    from prefpred.config import load_competition
    from prefpred.data.export import split_holdout, write_kaggle_csv

    comp = load_competition(competition)
    table = comp.load_train(data, format)
    train, test = split_holdout(table, source=source, fraction=fraction, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    train.write_parquet(out / "train.parquet")
    write_kaggle_csv(test, out / "test.csv", with_labels=False)
    write_kaggle_csv(test, out / "test_labelled.csv", with_labels=True)
    _echo(f"{out}: train.parquet {len(train)} rows, test.csv {len(test)} rows "
          f"(labels in test_labelled.csv)")


@app.command("score")
def score_command(
    submission: Annotated[Path, typer.Argument(help="Submission CSV.")],
    competition: CompetitionOpt,
    labels: Annotated[Path, typer.Option("--labels", help="Labelled file with the test ids.")],
    labels_format: Annotated[str | None, typer.Option("--labels-format")] = None,
) -> None:
    """Score a validated submission against known labels (sklearn's log loss, accuracy, ...)."""
    from prefpred.config import load_competition
    from prefpred.metrics import format_scores, score_by
    from prefpred.submission import read_submission_proba, validate_submission

    comp = load_competition(competition)
    truth = comp.load_test(labels, labels_format)
    validate_submission(submission, comp, test=truth)
    _ids, proba = read_submission_proba(submission, comp)
    y = truth.require_labels("scoring")
    table = score_by(y, proba, truth.column("source").to_numpy())
    _echo(format_scores(table, title=f"{submission.name} against {labels.name}"))


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    from prefpred import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"prefpred.commands.{info.name}").register(app)


_register_command_modules()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turn user errors into one line and exit status 2."""
    try:
        app(args=argv)  # click reports its own usage errors and exits
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except PrefpredError as err:
        typer.echo(f"prefpred: error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        typer.echo("prefpred: interrupted (finished stages are kept; re-run to resume)", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
