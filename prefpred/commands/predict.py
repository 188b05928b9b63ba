"""``prefpred predict``: a saved backbone artifact predicts a file, offline.

Writes logits and probabilities (parquet), or, with ``--competition`` and a ``.csv`` output, a
validated submission with its provenance. Inference streams to ``<out>.parts/`` and resumes from
there after an interrupt.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import Backbone, Format


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)


def predict_command(
    artifact: Annotated[Path, typer.Argument(help="A saved backbone artifact folder (written by "
                                             "fit, e.g. runs/<comp>/backbone/full_fit_work/"
                                             "artifact).")],
    test: Annotated[Path, typer.Option("--test", help="File to predict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .parquet (logits and "
                                      "probabilities) or .csv (a submission; needs "
                                      "--competition).")],
    competition: Annotated[str | None, typer.Option("--competition", "-c", help="Competition "
                                                    "whose test layout and submission format "
                                                    "to use.")] = None,
    format: Format = None,
    backbone: Backbone = None,
    swap_average: Annotated[bool, typer.Option("--swap-average/--no-swap-average",
                                               help="Average each pair with its swap.")] = True,
    infer_tokens: Annotated[int | None, typer.Option("--infer-tokens", min=1, help="Token budget "
                                                     "of one inference batch.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, "
                                               "cuda:N.")] = None,
) -> None:
    """Predict TEST with a saved backbone artifact (no training, nothing downloaded)."""

    from prefpred.errors import ConfigError
    from prefpred.io import check_output
    from prefpred.labels import PROBA_COLUMNS
    from prefpred.models.backbone import BackboneModel
    from prefpred.models.backbone.artifacts import read_artifact_info
    from prefpred.probabilities import softmax

    as_submission = out.suffix.lower() == ".csv"
    if as_submission and competition is None:
        raise ConfigError(f"{out}: a .csv output is a submission and needs --competition")
    check_output(out, inputs=[test, artifact], what="--out",
                 suffixes=(".csv", ".parquet", ".pq"))
    if competition is not None:
        from prefpred.competitions import load_competition

        comp = load_competition(competition)
        table = comp.load_test(test, format)
    else:
        from prefpred.data.formats import load_table

        comp = None
        table = load_table(test, format)
    overrides: dict = {"swap_average": swap_average}
    for key, value in (("backbone", backbone), ("infer_tokens", infer_tokens),
                       ("device", device)):
        if value is not None:
            overrides[key] = value
    info = read_artifact_info(artifact)
    model = BackboneModel.load(artifact, **overrides)
    parts = out.with_name(out.name + ".parts")
    model.set_work_dir(parts)
    logits = model.predict_logits(table)
    proba = softmax(logits)
    from prefpred.models.backbone.network import distributed_state

    if not distributed_state().is_main_process:  # data-parallel run: the main process writes
        return
    if as_submission:
        from prefpred.stages import build_provenance
        from prefpred.submission import write_submission

        provenance = build_provenance(
            test_paths=[test], test=table, model="backbone", artifact=str(artifact),
            weights_digest=info.get("weights_digest"), params=info["params"],
            swap_average=swap_average)
        write_submission(out, table, proba, comp, provenance)
    else:
        from prefpred.submission import write_probabilities

        write_probabilities(out, table.ids, proba, logits=logits, columns=PROBA_COLUMNS)
    shutil.rmtree(parts, ignore_errors=True)
    typer.echo(f"wrote {out} ({len(table)} rows{', validated' if as_submission else ''})")
