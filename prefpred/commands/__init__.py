"""Command-line command groups beyond the core ones in :mod:`prefpred.cli`.

Each module here defines ``register(app: typer.Typer) -> None``; the CLI imports every module in
this package at start-up and calls it. Keep heavy imports (torch, lightgbm, ...) inside the
command functions so that ``prefpred --help`` stays fast.
"""
