"""``prefpred features build``: compute the feature table of a competition's data and cache it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefpred.cli import Competition, Data, Format

features_app = typer.Typer(help="Length / style / similarity features and their cache.",
                           no_args_is_help=True)


@features_app.command("build")
def build_command(
    competition: Competition,
    data: Data = None,
    format: Format = None,
    out: Annotated[Path, typer.Option("--out", help="Cache folder.")] = Path("features"),
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="A tokenizer.json whose "
                                                  "token counts become features too.")] = None,
    swapped: Annotated[bool, typer.Option("--swapped/--no-swapped", help="Also cache the "
                                          "swapped pairs (what swap-augmented models read).")] = True,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recompute even if cached.")] = False,
) -> None:
    """Compute features of the training table (and its swapped pairs) into the cache folder."""
    import time

    from prefpred.competitions import load_competition
    from prefpred.features import FeatureConfig, kernels
    from prefpred.features.cache import FeatureCache

    comp = load_competition(competition)
    table = comp.load_train(data, format)
    if tokenizer is not None and not Path(tokenizer).is_file():
        from prefpred.errors import ConfigError

        raise ConfigError(f"--tokenizer {tokenizer}: no such tokenizer.json file")
    from prefpred.io import check_output

    check_output(out, inputs=list(data or []), folder=True, what="--out")
    cache = FeatureCache(out, FeatureConfig(tokenizer=tokenizer))
    target = table.with_swapped() if swapped else table
    t0 = time.perf_counter()
    frame, path, computed = cache.build(target, progress=True, rebuild=rebuild)
    seconds = time.perf_counter() - t0
    how = (f"computed in {seconds:.1f} s ({kernels.describe()})" if computed
           else "up to date (read from cache)")
    typer.echo(f"{path}: {frame.height} rows x {frame.width} features, version "
               f"{cache.config.version}, {how}")


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
