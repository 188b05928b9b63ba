"""``prefpred cv``: grouped K-fold cross-validation of one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import (
    Backbone,
    BackboneConfig,
    Competition,
    Data,
    DistillAlpha,
    DistillTemperature,
    Folds,
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
    Seed,
    Strict,
    TeacherPath,
    model_from_options,
)


def cv_command(
    competition: Competition,
    model: Model = None,
    data: Data = None,
    format: Format = None,
    folds: Folds = None,
    only_fold: Annotated[list[int] | None, typer.Option("--only-fold", min=0, help="Run only "
                                                        "this fold (repeatable).")] = None,
    seed: Seed = None,
    param: Param = None,
    params: ParamsFile = None,
    run_dir: RunDir = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume/--no-resume")] = True,
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
    """Grouped K-fold cross-validation: out-of-fold scores overall and per source."""
    from prefpred.competitions import load_competition
    from prefpred.distill import distillation_from_options
    from prefpred.io import check_output
    from prefpred.metrics import format_scores
    from prefpred.stages import cross_validate

    check_output(run_dir, inputs=[*(data or []), *([pseudo] if pseudo else [])], folder=True,
                 what="--run-dir")
    comp = load_competition(competition)
    model, model_params = model_from_options(model, param, params, backbone, config)
    table = comp.load_train(data, format, strict=strict)
    distill = distillation_from_options(teacher, distill_alpha, distill_temperature,
                                        not leaky_teacher, pseudo, pseudo_format, pseudo_weight,
                                        pseudo_min_confidence)
    if distill is not None:
        typer.echo(distill.summary())
    result = cross_validate(table, comp, model, model_params, run_dir=run_dir / comp.name,
                            n_folds=folds, seed=seed, only_folds=only_fold, resume=resume,
                            distill=distill, say=typer.echo)
    title = f"{comp.name} / {result.name}: out-of-fold scores"
    if distill is not None and not distill.nested:
        title += " (leaky teacher targets)"
    typer.echo(format_scores(result.scores, title=title))
    if distill is not None:
        typer.echo(distill.side_by_side(table, result, run_dir / comp.name / model))
    typer.echo(f"out-of-fold logits: {result.run_dir / 'oof.parquet'}")


def register(app: typer.Typer) -> None:
    app.command("cv")(cv_command)
