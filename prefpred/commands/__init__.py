"""Every ``prefpred`` command, one module per group.

Each module defines ``register(app: typer.Typer) -> None``; :mod:`prefpred.cli` imports every
module in this package at start-up and calls it. Commands only parse options (the shared ones
are declared once, in :mod:`prefpred.cli`) and call stages. Keep heavy imports (torch,
lightgbm, ...) inside the command functions so that ``prefpred --help`` stays fast.
"""

# A command module imported on its own (e.g. by a test) needs the app and the shared options
# first: importing the CLI here defines them, then registers every command module.
import prefpred.cli  # noqa: F401, E402
