"""``prefpred run CONFIG.toml``: the whole job, from data to a validated submission and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run_command(
    config: Annotated[Path, typer.Argument(help="Run configuration (TOML); see configs/demo.toml.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Base models through CV, stack, calibrate, refit, predict the test file, write and
    validate the submission, write an HTML report. Finished stages are reused on a re-run."""
    from prefpred.metrics import format_scores
    from prefpred.run import run

    result = run(config, progress=not quiet, say=(lambda s: None) if quiet else typer.echo)
    overall = result.oof_scores.filter(result.oof_scores["group"] == "ALL").select(
        "model", "calibration", "log_loss", "accuracy", "ece").sort("log_loss")
    typer.echo(format_scores(overall, title="out-of-fold scores (all rows)"))
    if result.holdout_scores is not None:
        typer.echo(format_scores(result.holdout_scores.select(
            "group", "rows", "log_loss", "accuracy", "brier", "ece"),
            title="held-out test rows"))
    import polars as pl

    typer.echo(format_scores(pl.DataFrame({"stage": list(result.timings),
                                           "seconds": [float(v) for v in
                                                       result.timings.values()]}),
                             title="time per stage"))
    typer.echo(f"final: {result.final_method}, out-of-fold log loss "
               f"{result.final_oof_log_loss:.4f}; submission {result.submission}; "
               f"report {result.report}; {result.timings['total']:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
