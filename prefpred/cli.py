"""The ``prefpred`` command line: the app, the options every command shares, and ``main``.

Each command lives in :mod:`prefpred.commands` (one module per group) and only parses options
and calls stages. Every error a user can cause prints one line (file, row, column, fix) and
exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from prefpred.errors import PrefpredError

app = typer.Typer(
    name="prefpred",
    help="Calibrated human-preference prediction (A wins / B wins / tie).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# --------------------------------------------------------------------------- shared options
Competition = Annotated[str, typer.Option("--competition", "-c",
                                          help="Competition name or TOML path.")]
Model = Annotated[str | None, typer.Option(
    "--model", "-m", help="Registered model name (see `prefpred list`; default: prior, or "
    "backbone with --backbone / --config).")]
Param = Annotated[list[str] | None, typer.Option("--param", "-p",
                                                 help="Model parameter key=value (repeatable).")]
ParamsFile = Annotated[str | None, typer.Option("--params", help="TOML/JSON parameter file, or "
                                                "the name of saved parameters (prefpred tune).")]
Data = Annotated[list[Path] | None, typer.Option("--data", "-d", help="Training file(s) "
                                                 "instead of the competition's.")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="Input format (default: "
                                            "detected).")]
TestFormat = Annotated[str | None, typer.Option("--test-format", help="Format of the test file "
                                                "(default: the competition's).")]
Strict = Annotated[bool, typer.Option("--strict", help="Reject repairable quirks (lone "
                                      "surrogates) instead of repairing them.")]
Folds = Annotated[int | None, typer.Option("--folds", help="Number of folds (default: the "
                                           "competition's).")]
Seed = Annotated[int | None, typer.Option("--seed", help="Fold seed (default: the "
                                          "competition's).")]
RunDir = Annotated[Path, typer.Option("--run-dir", help="Where out-of-fold logits and fitted "
                                      "models go.")]
Backbone = Annotated[str | None, typer.Option("--backbone", help="Backbone model: a local "
                                              "folder or a bundled name (minilm, smollm2).")]
BackboneConfig = Annotated[str | None, typer.Option("--config", help="Backbone run config: a "
                                                    "TOML file or a preset name "
                                                    "(minilm-budget, ...).")]


def model_from_options(model: str | None, param: list[str] | None, params: str | None,
                       backbone: str | None = None, config: str | None = None
                       ) -> tuple[str, dict[str, Any]]:
    """The model and its parameters from the shared model options: ``--model`` defaults to
    ``prior``, or to ``backbone`` when ``--backbone`` or ``--config`` is given."""
    from prefpred.params import model_params

    if model is None:
        model = "backbone" if backbone is not None or config is not None else "prior"
    return model, model_params(model, params_file=params, overrides=param, backbone=backbone,
                               config=config)


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
