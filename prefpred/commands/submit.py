"""``prefpred submit``, ``prefpred validate-submission`` and ``prefpred score``: write a
submission, check one as the grader would, score one against known labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import (
    Backbone,
    BackboneConfig,
    Competition,
    DistillAlpha,
    DistillTemperature,
    Format,
    LeakyTeacher,
    Model,
    Param,
    ParamsFile,
    Pseudo,
    PseudoConfidence,
    PseudoFormat,
    PseudoWeight,
    RunDir,
    Strict,
    TeacherPath,
    TestFormat,
    model_from_options,
)


def submit_command(
    competition: Competition,
    train: Annotated[list[Path], typer.Option("--train", help="Training file(s).")],
    test: Annotated[Path, typer.Option("--test", help="Test file to predict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Submission CSV to write.")],
    model: Model = None,
    format: Format = None,
    test_format: TestFormat = None,
    param: Param = None,
    params: ParamsFile = None,
    cv_folds: Annotated[int, typer.Option("--cv-folds", min=0, help="Folds of the CV whose "
                                          "scores go into the provenance (0: skip CV).")] = 5,
    run_dir: RunDir = Path("runs"),
    strict: Strict = False,
    backbone: Backbone = None,
    config: BackboneConfig = None,
    teacher: TeacherPath = None,
    distill_alpha: DistillAlpha = None,
    distill_temperature: DistillTemperature = 1.0,
    pseudo: Pseudo = None,
    pseudo_format: PseudoFormat = None,
    pseudo_weight: PseudoWeight = 1.0,
    pseudo_min_confidence: PseudoConfidence = 0.0,
    leaky_teacher: LeakyTeacher = False,
) -> None:
    """Fit on all of TRAIN, predict TEST, write and validate the submission."""
    from prefpred.competitions import load_competition
    from prefpred.distill import distillation_from_options
    from prefpred.io import check_output
    from prefpred.stages import cross_validate, fit_and_submit

    inputs = [*train, test, *([pseudo] if pseudo else [])]
    check_output(out, inputs=inputs, what="--out")
    check_output(run_dir, inputs=inputs, folder=True, what="--run-dir")
    comp = load_competition(competition)
    model, model_params = model_from_options(model, param, params, backbone, config)
    train_table = comp.load_train(train, format, strict=strict)
    test_table = comp.load_test(test, test_format, strict=strict)
    distill = distillation_from_options(teacher, distill_alpha, distill_temperature,
                                        not leaky_teacher, pseudo, pseudo_format, pseudo_weight,
                                        pseudo_min_confidence)
    label = model if distill is None else f"{model}-distilled"
    cv = None
    if cv_folds:
        cv = cross_validate(train_table, comp, model, model_params, run_dir=run_dir / comp.name,
                            n_folds=cv_folds, distill=distill, say=typer.echo)
    elif distill is not None:  # the final refit's targets still come from the teacher
        from prefpred.data.folds import assign_folds

        distill.prepare(train_table, assign_folds(train_table, comp.n_folds, comp.seed),
                        run_dir / comp.name / f"{label}-teacher", say=typer.echo)
    fit_rows = train_table if distill is None else distill.full_table(train_table)
    path = fit_and_submit(comp, fit_rows, test_table, model=model, params=model_params,
                          out=out, train_paths=train, test_path=test, cv=cv,
                          work_dir=run_dir / comp.name / label / "full_fit_work")
    line = f"wrote {path} ({len(test_table)} rows, validated)"
    if cv is not None:
        line += f"; CV log loss {cv.log_loss:.4f}"
    typer.echo(line)


def validate_command(
    file: Annotated[Path, typer.Argument(help="Submission CSV.")],
    competition: Competition,
    test: Annotated[Path, typer.Option("--test", help="The test file the submission answers.")],
    test_format: TestFormat = None,
) -> None:
    """Check a submission as the grader would; exit non-zero naming the first bad row."""
    from prefpred.competitions import load_competition
    from prefpred.submission import validate_submission

    comp = load_competition(competition)
    test_table = comp.load_test(test, test_format)
    report = validate_submission(file, comp, test=test_table)
    typer.echo(f"{file}: {report}")


def score_command(
    submission: Annotated[Path, typer.Argument(help="Submission CSV.")],
    competition: Competition,
    labels: Annotated[Path, typer.Option("--labels", help="Labelled file with the test ids.")],
    labels_format: Annotated[str | None, typer.Option("--labels-format")] = None,
) -> None:
    """Score a validated submission against known labels (sklearn's log loss, accuracy, ...)."""
    from prefpred.competitions import load_competition
    from prefpred.metrics import format_scores, score_by
    from prefpred.submission import read_submission_proba, validate_submission

    comp = load_competition(competition)
    truth = comp.load_test(labels, labels_format)
    validate_submission(submission, comp, test=truth)
    proba = read_submission_proba(submission, comp, truth.ids)
    y = truth.require_labels("scoring")
    table = score_by(y, proba, truth.column("source").to_numpy())
    typer.echo(format_scores(table, title=f"{submission.name} against {labels.name}"))


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_command)
    app.command("validate-submission")(validate_command)
    app.command("score")(score_command)
