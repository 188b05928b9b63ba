"""``prefpred train-reward``: train a scalar reward model that keeps ties."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import Backbone, Competition, Data, Format, Param, Strict


def _inputs(competition: str, data: list[Path] | None, config: str | None,
            backbone: str | None) -> list[Path]:
    """Every file or folder the command reads (an output may neither be one nor hold one)."""
    from prefpred.competitions import load_competition

    paths = [Path(p) for p in data or []]
    if config is not None:
        paths.append(Path(config))
    if Path(competition).suffix == ".toml":
        paths.append(Path(competition))
    if not data:
        paths += [src.resolve() for src in load_competition(competition).train]
    if backbone is not None and Path(backbone).expanduser().exists():
        paths.append(Path(backbone))
    return paths


def _check_out(out: Path, inputs: list[Path]) -> None:
    """``--out`` is replaced as a whole: it may not be an input, hold one, or be a folder of
    something else."""
    from prefpred.errors import ConfigError
    from prefpred.io import check_output
    from prefpred.rewards.train import REWARD_INFO

    check_output(out, inputs=inputs, folder=True, what="--out", apart=True)
    if out.is_dir() and any(out.iterdir()) and not (out / REWARD_INFO).is_file():
        raise ConfigError(f"--out {out} is a folder that is not a reward model written by "
                          "train-reward: it would be replaced as a whole; choose a new path")


def train_reward_command(
    competition: Competition,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write: a Hugging Face "
                                      "sequence classifier (num_labels=1) with its tokenizer "
                                      "and prefpred_reward.json.")],
    config: Annotated[str | None, typer.Option("--config", help="TOML file of train-reward "
                                               "parameters (flat or under a params table).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="bt (Bradley-Terry, ties dropped), "
                                             "davidson or rao-kupper (tie parameter learned); "
                                             "default davidson.")] = None,
    backbone: Backbone = None,
    param: Param = None,
    data: Data = None,
    format: Format = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Checkpoints go here; a re-run resumes from them.")] = None,
    strict: Strict = False,
) -> None:
    """Train a scalar reward model on the competition's pairs, keeping ties (or not: bt)."""
    from prefpred.competitions import load_competition
    from prefpred.params import load_params
    from prefpred.rewards.losses import check_loss
    from prefpred.rewards.train import RewardConfig, train_reward_model

    params = load_params(config, param)
    if loss is not None:
        params["loss"] = check_loss(loss)
    if backbone is not None:
        params["backbone"] = backbone
    cfg = RewardConfig.from_params(params, config)
    inputs = _inputs(competition, data, config, cfg.backbone)
    _check_out(out, inputs)
    if work_dir is not None:
        from prefpred.io import check_output

        check_output(work_dir, inputs=[*inputs, out], folder=True, what="--work-dir")
    comp = load_competition(competition)
    table = comp.load_train(data, format, strict=strict)
    info = train_reward_model(table, cfg, out, work_dir=work_dir)
    summary = info["training"]
    dropped = f" ({summary['ties_dropped']} ties dropped)" if cfg.loss == "bt" else ""
    typer.echo(f"trained {cfg.loss} on {summary['pairs_trained']} of {summary['rows']} pairs"
               f"{dropped}, {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
               f"{summary['seconds']:.0f} s")
    if "tie_parameter" in info:
        tie = info["tie_parameter"]
        typer.echo(f"tie parameter {tie['name']} = {tie['value']:.4g} (P(tie) at equal rewards "
                   f"{info['tie_rate_at_equal_rewards']:.3f})")
    typer.echo(f"wrote {out} (score it: prefpred score-rewards --model {out} --data FILE "
               "--out SCORES)")


def register(app: typer.Typer) -> None:
    app.command("train-reward")(train_reward_command)
