"""``prefpred calibrate-rewards fit|apply`` and ``prefpred score-rewards``: reward scores to
calibrated three-way probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import Format

calibrate_app = typer.Typer(
    help="Turn reward-model scores (reward_a, reward_b) into calibrated A / B / tie "
         "probabilities with a tie-aware model (Rao-Kupper, Davidson, multinomial).",
    no_args_is_help=True,
)

#: What a scores or probabilities file may be.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

ScoresOpt = Annotated[Path, typer.Option("--scores", "-s", help="CSV / parquet with id, reward_a, "
                                         "reward_b (and a label to fit on).")]


def _features(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [f.strip() for f in v.split(",") if f.strip()]
    return out


@calibrate_app.command("fit")
def fit_command(
    scores: ScoresOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    model: Annotated[str, typer.Option("--model", "-m", help="auto (lowest out-of-fold log "
                                       "loss), rao-kupper, davidson or multinomial.")] = "auto",
    feature: Annotated[list[str] | None, typer.Option("--feature", help="Numeric column of the "
                                                      "scores file the multinomial model may use "
                                                      "(repeatable, or comma-separated).")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Folds for the out-of-fold comparison "
                                       "(grouped by a 'group' column when present).")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1)] = 0,
    position_bias: Annotated[bool, typer.Option("--position-bias/--no-position-bias",
                                                help="Fit a first-position advantage.")] = True,
    tie_rate: Annotated[float | None, typer.Option(
        "--tie-rate", help="Fix P(tie) at equal rewards instead of learning it (needed when the labels have "
             "no ties; rao-kupper and davidson only).")] = None,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="A reward model folder from `prefpred train-reward`: its tie model "
        "starts from the trained tie parameter, is compared as it is ('as-trained'), and gives "
        "the tie rate when the labels have no ties.")] = None,
) -> None:
    """Fit every tie model, compare them out of fold, save them; the best becomes the default."""
    from prefpred.io import check_output
    from prefpred.metrics import format_scores
    from prefpred.rewards.calibrate import fit_reward_calibration
    from prefpred.rewards.io import read_scores

    check_output(out, inputs=[scores, *([init_from] if init_from else [])], folder=True,
                 what="--out")
    data = read_scores(scores, require_labels=True, features=_features(feature))
    result = fit_reward_calibration(data, out, model=model, n_folds=folds, seed=seed,
                                    position_bias=position_bias, tie_rate=tie_rate,
                                    init_from=init_from)
    typer.echo(format_scores(result.scores, title=f"{scores.name}: {len(data)} pairs, "
                             f"{folds}-fold out-of-fold scores"))
    params = ", ".join(f"{k}={v:.4g}" for k, v in result.model.params_.items())
    typer.echo(f"chosen: {result.chosen} ({params})")
    typer.echo(f"wrote {out}/calibrator.json (and one file per model, report.json)")


@calibrate_app.command("apply")
def apply_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder written by `fit` (or one "
                                        "model's JSON file).")],
    scores: ScoresOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV or parquet to write: id and "
                                      "the Kaggle submission's probability columns.")],
    use: Annotated[str | None, typer.Option("--use", help="Apply this fitted model of the "
                                            "folder instead of the chosen one.")] = None,
) -> None:
    """Calibrated probabilities for every pair of a scores file (labels are not needed)."""
    from prefpred.io import check_output
    from prefpred.rewards.calibrate import (
        apply_reward_calibration,
        model_features,
        resolve_model_path,
    )
    from prefpred.rewards.io import read_scores
    from prefpred.rewards.models import load_tie_model
    from prefpred.submission import write_probabilities

    check_output(out, inputs=[scores, model], what="--out", suffixes=TABLE_SUFFIXES)
    tie_model = load_tie_model(resolve_model_path(model, use))
    data = read_scores(scores, features=model_features(tie_model))
    proba = apply_reward_calibration(tie_model, data)
    write_probabilities(out, data.ids, proba)
    typer.echo(f"wrote {out} ({len(data)} rows, {tie_model.name})")


def score_rewards_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Local Hugging Face reward model "
                                        "folder (sequence classifier with one output).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Pairs to score (any format "
                                       "`prefpred data inspect` reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV or parquet: id, reward_a, "
                                      "reward_b, source, group[, label].")],
    format: Format = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=8, help="Tokens per conversation (truncated from the left; default: "
        "the length a train-reward model was trained with, else 2048; at most the model's "
        "positions).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: "
                                               "cuda when available).")] = None,
    dtype: Annotated[str, typer.Option("--dtype")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Score only the first N "
                                              "pairs.")] = None,
) -> None:
    """Score both responses of every pair with a reward model (for calibrate-rewards)."""
    from prefpred.data.formats import load_table
    from prefpred.io import check_output
    from prefpred.rewards.io import write_frame
    from prefpred.rewards.scoring import score_pairs

    check_output(out, inputs=[data, model], what="--out", suffixes=TABLE_SUFFIXES)
    table = load_table(data, format)
    if limit is not None:
        table = table.take(list(range(min(limit, len(table)))))
    frame = score_pairs(model, table, batch_size=batch_size, max_length=max_length,
                        device=device, dtype=dtype)
    write_frame(frame, out)
    typer.echo(f"wrote {out} ({frame.height} pairs scored with {model})")


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate-rewards")
    app.command("score-rewards")(score_rewards_command)
