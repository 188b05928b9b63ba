"""``prefpred predict``: a fitted pipeline (a ``prefpred run`` folder or a bundle's) or one saved
backbone artifact predicts a file, offline.

Writes logits and probabilities (parquet), or, with a ``.csv`` output, a validated submission
with its provenance (a pipeline knows its competition; an artifact needs ``--competition``).
Backbone inference streams to ``<out>.parts/`` and resumes from there after an interrupt.
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
    model: Annotated[Path, typer.Argument(help="A `prefpred run` output folder (its "
                                          "pipeline.json), a bundle's pipeline/ folder, or "
                                          "a saved backbone artifact folder.")],
    test: Annotated[Path, typer.Option("--test", help="File to predict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .parquet (logits and "
                                      "probabilities) or .csv (a validated submission).")],
    competition: Annotated[str | None, typer.Option("--competition", "-c", help="Competition "
                                                    "whose test layout and submission format "
                                                    "to use (default for a pipeline: its "
                                                    "own).")] = None,
    format: Format = None,
    backbone: Backbone = None,
    swap_average: Annotated[bool | None, typer.Option(
        "--swap-average/--no-swap-average", help="Average each pair with its swap (default: "
        "as the model was saved).")] = None,
    infer_tokens: Annotated[int | None, typer.Option("--infer-tokens", min=1, help="Token budget "
                                                     "of one inference batch.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, "
                                               "cuda:N.")] = None,
    devices: Annotated[str | None, typer.Option(
        "--devices", help="One inference worker per device: cuda:0,cuda:1 or auto (every "
        "GPU); batches are split between them and merged in row order.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="batches (default) or sides: with swap averaging on two devices, the "
        "swapped pairs run on the second.")] = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="auto (bf16 on compute capability >= 8.0, fp16 on T4/V100/P100, "
        "fp32 on CPU), bf16, fp16 or fp32.")] = None,
    load_in: Annotated[str | None, typer.Option(
        "--load-in", help="8bit or 4bit base weights (bitsandbytes, CUDA only).")] = None,
    time_budget: Annotated[str | None, typer.Option(
        "--time-budget", help="e.g. 9h: time a warm-up, project the file, and drop swap "
        "averaging or lower max_length to fit (or refuse) before spending it.")] = None,
) -> None:
    """Predict TEST with a fitted pipeline or a saved backbone artifact (no training, nothing
    downloaded)."""
    from prefpred.errors import ConfigError
    from prefpred.io import check_output
    from prefpred.predictor import PIPELINE_FILE

    overrides: dict = {}
    for key, value in (("backbone", backbone), ("infer_tokens", infer_tokens),
                       ("device", device), ("devices", devices), ("split", split),
                       ("precision", precision), ("load_in", load_in),
                       ("time_budget", time_budget), ("swap_average", swap_average)):
        if value is not None:
            overrides[key] = value
    if overrides:  # checked as options, before anything loads (errors name the option)
        from prefpred.models.backbone.config import BackboneConfig

        BackboneConfig.from_params(dict(overrides))
    as_submission = out.suffix.lower() == ".csv"
    is_pipeline = (model / PIPELINE_FILE).is_file()
    if as_submission and competition is None and not is_pipeline:
        raise ConfigError(f"{out}: a .csv output is a submission and needs --competition")
    if not is_pipeline:  # a folder that is no model is named as such first
        from prefpred.models.backbone.artifacts import read_artifact_info

        read_artifact_info(model)
    # an output inside the model folder would change the files its digests vouch for
    check_output(out, inputs=[test, model], what="--out",
                 suffixes=(".csv", ".parquet", ".pq"), apart=True)
    parts = out.with_name(out.name + ".parts")
    if is_pipeline:
        comp, table, logits, provenance = _predict_pipeline(
            model, test, competition, format, overrides, parts)
    else:
        comp, table, logits, provenance = _predict_artifact(
            model, test, competition, format, overrides, parts)
    from prefpred.models.backbone.network import distributed_state

    if not distributed_state().is_main_process:  # data-parallel run: the main process writes
        return
    write_predictions(out, table, logits, comp if as_submission else None, provenance)
    shutil.rmtree(parts, ignore_errors=True)
    typer.echo(f"wrote {out} ({len(table)} rows{', validated' if as_submission else ''})")


def write_predictions(out: Path, table, logits, comp, provenance: dict) -> None:
    """A validated submission (``comp`` given) or logits and probabilities (parquet)."""
    from prefpred.labels import PROBA_COLUMNS
    from prefpred.probabilities import softmax

    proba = softmax(logits)
    if comp is not None:
        from prefpred.submission import write_submission

        write_submission(out, table, proba, comp, provenance)
    else:
        from prefpred.submission import write_probabilities

        write_probabilities(out, table.ids, proba, logits=logits, columns=PROBA_COLUMNS)


def _predict_pipeline(folder: Path, test: Path, competition, fmt, overrides, parts):
    from prefpred.predictor import Predictor
    from prefpred.stages import build_provenance

    predictor = Predictor.load(folder, **overrides)
    predictor.set_work_dir(parts)
    comp = predictor.competition
    if competition is not None:
        from prefpred.competitions import load_competition

        comp = load_competition(competition)
    table = comp.load_test(test, fmt)
    logits = predictor.predict_logits(table)
    provenance = build_provenance(test_paths=[test], test=table, model="pipeline",
                                  pipeline=predictor.describe(), overrides=overrides)
    return comp, table, logits, provenance


def _predict_artifact(artifact: Path, test: Path, competition, fmt, overrides, parts):
    from prefpred.models.backbone import BackboneModel
    from prefpred.models.backbone.artifacts import read_artifact_info
    from prefpred.stages import build_provenance

    if competition is not None:
        from prefpred.competitions import load_competition

        comp = load_competition(competition)
        table = comp.load_test(test, fmt)
    else:
        from prefpred.data.formats import load_table

        comp = None
        table = load_table(test, fmt)
    info = read_artifact_info(artifact)
    overrides.setdefault("swap_average", True)
    model = BackboneModel.load(artifact, **overrides)
    model.set_work_dir(parts)
    logits = model.predict_logits(table)
    provenance = build_provenance(
        test_paths=[test], test=table, model="backbone", artifact=str(artifact),
        weights_digest=info.get("weights_digest"), params=info["params"],
        swap_average=overrides["swap_average"])
    return comp, table, logits, provenance
