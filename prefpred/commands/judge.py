"""``prefpred evaluate-judge``: how accurate, consistent, biased and calibrated an existing LLM
judge or reward model is, from its verdicts (LLMBar result files, a prefpred judgments file, a
reward-scores file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def evaluate_judge_command(
    judgments: Annotated[list[Path], typer.Option(
        "--judgments", "-j", help="LLMBar result.json, a folder searched for them, a prefpred "
        "judgments file (CSV / JSON lines / parquet) or a reward-scores file; more files may "
        "follow as arguments (a shell glob).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for summary.json, "
                                      "by_subset.csv and report.html.")],
    more: Annotated[list[Path] | None, typer.Argument(
        help="More judgment files (e.g. the rest of a glob after --judgments).",
        show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Gold labels by id (id, label): replace the files' labels; every "
        "judged id must be there.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, max=100_000,
                                           help="Bootstrap resamples (over prompt groups).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1)] = 0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto, llmbar or prefpred.")] = "auto",
    level: Annotated[float, typer.Option("--ci", min=0.5, max=0.999,
                                         help="Interval level.")] = 0.95,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Folds of the calibrated "
                                       "probabilities (grouped by prompt).")] = 5,
) -> None:
    """Accuracy per order, order agreement, kappa, position and length bias with clustered
    bootstrap intervals, and out-of-fold calibrated probabilities, per judge and subset."""
    from prefpred.io import atomic_paths
    from prefpred.judges.io import FORMATS, apply_labels, read_judgments
    from prefpred.judges.report import build_summary, render_html, summary_table

    if fmt not in FORMATS:
        from prefpred.errors import ConfigError

        raise ConfigError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    inputs = [*judgments, *(more or [])]
    from prefpred.io import check_output

    check_output(out, inputs=[*inputs, *([labels] if labels is not None else [])], folder=True,
                 what="--out", apart=True)
    data, files = read_judgments(inputs, fmt)
    if labels is not None:
        data = apply_labels(data, labels)
    summary = build_summary(data, files, n_boot=bootstrap, seed=seed, level=level, folds=folds,
                            labels=labels)
    table = summary_table(summary)
    page = render_html(summary, table, data, seed=seed, folds=folds)
    import json

    names = ("summary.json", "by_subset.csv", "report.html")
    with atomic_paths(*[out / n for n in names]) as (tmp_summary, tmp_table, tmp_html):
        tmp_summary.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n",
                               encoding="utf-8")
        table.write_csv(tmp_table)
        tmp_html.write_text(page, encoding="utf-8")
    _echo(table)
    typer.echo(f"wrote {out}/summary.json, by_subset.csv, report.html ({len(data)} judgments, "
               f"{len(summary['judges'])} judge(s))")


def _echo(table) -> None:
    import polars as pl

    from prefpred.metrics import format_scores

    shown = table.filter(pl.col("subset") == "all").select(
        ["judge", "n_pairs", "n_missing", "accuracy_original", "accuracy_swapped",
         "accuracy_average", "accuracy_both", "agreement", "first_position_share"])
    typer.echo(format_scores(shown))


def register(app: typer.Typer) -> None:
    app.command("evaluate-judge")(evaluate_judge_command)
