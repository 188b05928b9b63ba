"""``prefpred tune``: an Optuna study over a model's parameters, shared by any number of workers."""

from __future__ import annotations

from typing import Annotated

import typer

from prefpred.cli import Competition, Data, Folds, Format, Param, ParamsFile, Seed


def tune_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to tune (lgbm, tfidf).")] = "lgbm",
    trials: Annotated[int, typer.Option("--trials", "-n", min=0, help="Finished trials the study should "
                                        "hold (all workers together); re-run to resume.")] = 20,
    storage: Annotated[str, typer.Option("--storage", help="SQLAlchemy URL of the study database: "
                                         "sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB"
                                         )] = "sqlite:///runs/optuna.db",
    study: Annotated[str | None, typer.Option("--study", help="Study name (default: "
                                              "MODEL-COMPETITION).")] = None,
    competition: Competition = "shared-all",
    data: Data = None,
    format: Format = None,
    folds: Folds = None,
    seed: Seed = None,
    worker: Annotated[int, typer.Option("--worker", min=0, help="Worker number; offsets the sampler "
                                        "seed so parallel workers explore differently.")] = 0,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0, help="Stop starting trials after "
                                                  "this many seconds.")] = None,
    param: Param = None,
    params: ParamsFile = None,
    save_as: Annotated[str | None, typer.Option("--save-as", help="Name for the best parameters "
                                                "(default: the study name).")] = None,
) -> None:
    """Tune a model by grouped K-fold out-of-fold log loss; save the best parameters by name."""
    from prefpred.competitions import load_competition
    from prefpred.params import load_params
    from prefpred.tune import redact, tune

    comp = load_competition(competition)
    table = comp.load_train(data, format)
    from prefpred.io import safe_name

    name = safe_name(study or f"{model}-{comp.name}", "--study")  # names the saved parameters
    if save_as is not None:
        safe_name(save_as, "--save-as")
    result = tune(table, model=model, n_trials=trials, storage=storage, study_name=name,
                  base_params=load_params(params, param), n_folds=folds or comp.n_folds,
                  seed=comp.seed if seed is None else seed, worker=worker, timeout=timeout,
                  save_as=save_as)
    typer.echo(f"study {name!r} in {redact(storage)}: {result.n_finished} finished trials "
               f"({result.n_run_here} by this worker)")
    if result.best_value is None:
        typer.echo("no complete trial yet")
        return
    typer.echo(f"best out-of-fold log loss {result.best_value:.4f} with {result.best_params}")
    typer.echo(f"saved as {result.saved_to} (use: --params {save_as or name})")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
