"""``prefpred bundle RUN_DIR --out DIR`` writes an offline bundle of a run's fitted pipeline
(or of parts saved apart: ``--model LABEL=FOLDER ... --stacker --calibrator --competition``);
``prefpred bundle verify DIR`` checks one against its manifest (see :mod:`prefpred.bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle_command)


def bundle_command(
    run_dir: Annotated[Path | None, typer.Argument(help="A finished `prefpred run` folder (its "
                                                   "pipeline.json), or `verify`.")] = None,
    bundle_dir: Annotated[Path | None, typer.Argument(help="With `verify`: the bundle to "
                                                      "check.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The bundle folder to write "
                                             "(new, or a bundle it replaces).")] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="A platform profile: a file of `name==version` lines the target "
        "image already has (their wheels are left out), or a bundled name: kaggle-gpu.")] = None,
    all_deps: Annotated[bool, typer.Option("--all-deps", help="Ship every dependency's wheel, "
                                           "whatever the profile says.")] = False,
    include_weights: Annotated[bool, typer.Option(
        "--include-weights/--no-weights", help="Copy a local backbone folder that LoRA or "
        "frozen models build on into the bundle.")] = True,
    wheels_from: Annotated[Path | None, typer.Option(
        "--wheels-from", help="A folder of wheels to ship instead of repacking the installed "
        "ones (e.g. `pip download` for another Python or platform).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Instead of RUN_DIR: LABEL=FOLDER, a saved model or a backbone "
        "artifact (repeat; a label given again adds a fold model).")] = None,
    stacker: Annotated[Path | None, typer.Option("--stacker", help="With --model: the "
                                                 "fitted stacker (stacker.json).")] = None,
    calibrator: Annotated[Path | None, typer.Option("--calibrator", help="With --model: the "
                                                    "fitted calibrator.")] = None,
    competition: Annotated[str | None, typer.Option("--competition", "-c", help="With "
                                                    "--model: the submission's "
                                                    "competition.")] = None,
) -> None:
    """Bundle a run's fitted pipeline, wheels and an entry point for an offline notebook."""
    from prefpred.bundle import build_bundle, verify_bundle
    from prefpred.errors import ConfigError

    if run_dir is not None and run_dir.parts == ("verify",) and bundle_dir is not None:
        manifest = verify_bundle(bundle_dir)
        typer.echo(f"{bundle_dir}: {len(manifest['files'])} files match the manifest "
                   f"(prefpred {manifest['versions']['prefpred']}, Python "
                   f"{manifest['versions']['python']})")
        return
    if bundle_dir is not None:
        raise ConfigError("prefpred bundle takes one run folder and --out (or: prefpred "
                          "bundle verify DIR)")
    if out is None:
        raise ConfigError("prefpred bundle RUN_DIR needs --out BUNDLE_DIR")
    options = dict(profile=profile, all_deps=all_deps, include_weights=include_weights,
                   wheels_from=wheels_from, say=typer.echo)
    if (run_dir is None) == (not model):
        raise ConfigError("prefpred bundle takes a run folder, or --model LABEL=FOLDER "
                          "(with --competition), not both")
    if run_dir is not None:
        build_bundle(run_dir, out, **options)
        return
    if competition is None:
        raise ConfigError("prefpred bundle --model needs --competition")
    import tempfile

    from prefpred.predictor import assemble_pipeline

    pairs = []
    for item in model:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise ConfigError(f"--model {item!r}: write LABEL=FOLDER")
        pairs.append((label, Path(folder)))
    from prefpred.io import check_output
    with tempfile.TemporaryDirectory(prefix="prefpred-assemble-") as tmp:
        assemble_pipeline(tmp, pairs, competition=competition, stacker=stacker,
                          calibrator=calibrator)
        # the parts are models (checked by loading): a bundle inside one would break its digests
        check_output(out, inputs=[f for _, f in pairs] + [p for p in (stacker, calibrator) if p],
                     folder=True, what="--out", apart=True)
        build_bundle(tmp, out, checked=True, **options)  # assembling loaded every part
