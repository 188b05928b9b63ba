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
Folds = Annotated[int | None, typer.Option("--folds", min=2, help="Number of folds (default: "
                                           "the competition's).")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, max=2**32 - 1, help="Fold seed "
                                          "(default: the competition's).")]
RunDir = Annotated[Path, typer.Option("--run-dir", help="Where out-of-fold logits and fitted "
                                      "models go.")]
Backbone = Annotated[str | None, typer.Option("--backbone", help="Backbone model: a local "
                                              "folder or a bundled name (minilm, smollm2).")]
BackboneConfig = Annotated[str | None, typer.Option("--config", help="Backbone run config: a "
                                                    "TOML file or a preset name "
                                                    "(minilm-budget, ...).")]
TeacherPath = Annotated[Path | None, typer.Option(
    "--teacher", help="Distil from this teacher: a prefpred cv folder (or its oof.parquet) or a "
    "prefpred run folder; refitted inside each training split (nested, no fold leaks).")]
DistillAlpha = Annotated[float | None, typer.Option(
    "--distill-alpha", min=0.0, max=1.0, help="Weight of the teacher in the target (default "
    "0.5 with --teacher).")]
DistillTemperature = Annotated[float, typer.Option(
    "--distill-temperature", min=1e-3, help="Temperature of the teacher's softmax.")]
Pseudo = Annotated[Path | None, typer.Option(
    "--pseudo", help="Unlabelled pairs the teacher labels (soft) and the student trains on.")]
PseudoFormat = Annotated[str | None, typer.Option("--pseudo-format",
                                                  help="Format of --pseudo (default: guess).")]
PseudoWeight = Annotated[float, typer.Option("--pseudo-weight", min=1e-6,
                                             help="Sample weight of pseudo-labelled rows.")]
PseudoConfidence = Annotated[float, typer.Option(
    "--pseudo-min-confidence", min=0.0, max=0.999, help="Keep pseudo-labelled rows whose top "
    "teacher probability is at least this.")]
LeakyTeacher = Annotated[bool, typer.Option(
    "--leaky-teacher", help="Use the teacher's plain out-of-fold logits in CV (leaks the "
    "held-out fold's labels; only to measure the leak).")]


@app.callback()
def _global_options(
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Let model folders run the Python code they ship (a "
        "config's auto_map), for this run only. Off unless given here: no file can turn it "
        "on.")] = False,
) -> None:
    """Calibrated human-preference prediction (A wins / B wins / tie)."""
    if trust_remote_code:
        from prefpred.hf import allow_remote_code

        allow_remote_code()  # until main() returns


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


def _click_errors():
    """The exception classes of the click that typer runs on (its bundled copy, or click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer versions that use the click package
        from click import exceptions
    return exceptions


INTERRUPTED = "prefpred: interrupted (finished stages are kept; re-run to resume)"


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app; every error a user can cause (a bad option, bad data,
    a bad file) prints one line and exits with status 2; Ctrl-C exits with 130."""
    import warnings

    from prefpred.hf import remote_code_allowed

    errors = _click_errors()
    try:
        with remote_code_allowed(False), warnings.catch_warnings():
            # library warnings (numpy RuntimeWarnings, deprecations) are not a user interface
            warnings.simplefilter("ignore")
            status = app(args=argv, prog_name="prefpred", standalone_mode=False)
        if status == 130:  # typer turns Ctrl-C into this status when it does not exit itself
            raise KeyboardInterrupt
    except errors.NoArgsIsHelpError:
        return 2  # the help was printed
    except errors.UsageError as err:
        command = err.ctx.command_path + ": " if err.ctx is not None else ""
        typer.echo(f"prefpred: error: {command}{' '.join(err.format_message().split())}",
                   err=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo(INTERRUPTED, err=True)
        return 130
    except typer.Exit as exit_:
        return exit_.exit_code
    except PrefpredError as err:
        typer.echo(f"prefpred: error: {err}", err=True)
        return err.exit_code
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
