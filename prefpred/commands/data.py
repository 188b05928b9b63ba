"""``prefpred list``, ``prefpred data inspect`` and ``prefpred holdout``: what is installed, what
a data file holds, and a grouped hold-out split written as a Kaggle-format test file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import Competition, Data, Format, Strict

data_app = typer.Typer(help="Look at data files.", no_args_is_help=True)


def list_command() -> None:
    """Formats, models and competitions this installation knows."""
    from prefpred.competitions import list_competitions
    from prefpred.data.formats import FORMATS
    from prefpred.models.base import model_names

    typer.echo("formats:")
    for f in FORMATS.values():
        typer.echo(f"  {f.name:<22} {f.description}")
    typer.echo("models: " + ", ".join(model_names()))
    typer.echo("competitions: " + ", ".join(list_competitions()))


@data_app.command("inspect")
def inspect_command(
    file: Annotated[Path, typer.Argument(help="Data file or MT-Bench folder.")],
    format: Format = None,
    strict: Strict = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rows, label balance, turn counts, length percentiles and the quirks found."""
    from prefpred.data.formats import load_table
    from prefpred.data.inspect import describe, render

    info = describe(load_table(file, format, strict=strict))
    typer.echo(json.dumps(info, indent=2) if as_json else render(info))


def holdout_command(
    competition: Competition,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train.parquet, test.csv "
                                      "and test_labelled.csv.")],
    source: Annotated[str | None, typer.Option("--source", help="Hold out rows of this source "
                                               "only.")] = None,
    fraction: Annotated[float, typer.Option("--fraction")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1)] = 0,
    data: Data = None,
    format: Format = None,
) -> None:
    """Split whole prompt groups off as a Kaggle-format test file, with its labels kept apart."""
    from prefpred.competitions import load_competition
    from prefpred.data.export import HOLDOUT_FILES, split_holdout, write_holdout
    from prefpred.io import check_output

    comp = load_competition(competition)
    inputs = list(data or []) or [s.resolve() for s in comp.train]
    check_output(out, inputs=inputs, folder=True, what="--out")
    for name in HOLDOUT_FILES:
        check_output(out / name, inputs=inputs, what="--out")
    table = comp.load_train(data, format)
    train, test = split_holdout(table, source=source, fraction=fraction, seed=seed)
    write_holdout(out, test, train)
    typer.echo(f"{out}: train.parquet {len(train)} rows, test.csv {len(test)} rows "
               f"(labels in test_labelled.csv)")


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.add_typer(data_app, name="data")
    app.command("holdout")(holdout_command)
