"""The offline bundle of a finished run: its size, the time to install it with no package index
into a fresh environment standing in for a platform image, and CPU inference rows/s of the
bundle's entry point against ``prefpred predict`` on the same run (same probabilities checked).

The stand-in platform is a fresh virtual environment that sees, through a .pth file, the
packages of this environment that the profile lists and what they depend on (the versions
installed here, not the profile's), minus every package the bundle ships a wheel of: those
are installed from the bundle's wheels.

    make demo   # (or any `prefpred run`)
    python benchmarks/bench_bundle.py --run runs/demo               # appends to RESULTS.md
    python benchmarks/bench_bundle.py --run runs/demo --profile kaggle-gpu --no-record
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_result  # noqa: E402

from prefpred.testing import platform_venv  # noqa: E402


def _size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--test", type=Path, help="default: the run's data/test.csv")
    ap.add_argument("--profile", default="kaggle-gpu")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    test = args.test or args.run / "data" / "test.csv"
    rows = pl.read_csv(test, infer_schema=False).height
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1"}
    with tempfile.TemporaryDirectory(prefix="prefpred-bench-bundle-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prefpred.cli", "bundle", args.run, "--out",
                        tmp / "bundle", "--profile", args.profile], check=True, env=env)
        build_s = time.perf_counter() - t0
        bundle = tmp / "bundle"
        import json

        manifest = json.loads((bundle / "manifest.json").read_text())
        # the stand-in image: the profile's packages and what they need, minus the wheels
        from prefpred.bundle import dependency_closure

        provided = set(manifest["profile_provides"])
        for name in list(provided):
            provided |= set(dependency_closure(name, {}, all_deps=True).dists)
        python = platform_venv(tmp, provided - set(manifest["wheels"]))
        t0 = time.perf_counter()
        subprocess.run([python, bundle / "predict.py", "--install-only"], check=True, env=env)
        install_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        subprocess.run([python, bundle / "predict.py", "--no-install", "--test", test, "--out",
                        tmp / "bundle.csv"], check=True, env=env)
        bundle_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prefpred.cli", "predict", args.run, "--test",
                        test, "--out", tmp / "predict.csv"], check=True, env=env)
        predict_s = time.perf_counter() - t0
        cols = ["winner_model_a", "winner_model_b", "winner_tie"]
        a = pl.read_csv(tmp / "bundle.csv").select(cols).to_numpy()
        b = pl.read_csv(tmp / "predict.csv").select(cols).to_numpy()
        diff = float(np.abs(a - b).max())
        row = [str(args.run), args.profile, f"{_size(bundle):.1f}",
               f"{_size(bundle / 'wheels'):.1f}", len(manifest["wheels"]) + 1,
               f"{build_s:.1f}", f"{install_s:.1f}", rows, f"{rows / bundle_s:.1f}",
               f"{rows / predict_s:.1f}", f"{diff:.1e}"]
    print(dict(zip(COLUMNS, row, strict=True)))
    if not args.no_record:
        append_result(
            "Offline bundle: size, install with no index, CPU inference rows/s", COLUMNS, [row],
            "python benchmarks/bench_bundle.py --run runs/demo",
            note="Install: `predict.py --install-only` (pip --no-index from wheels/) in a "
                 "fresh venv standing in for the image (the profile's packages and their "
                 "dependencies as installed here, minus the shipped wheels). Rows/s: wall time "
                 "of the whole command (start-up and model loading included) on the run's test "
                 "file; `max abs diff` compares the two submissions.")


COLUMNS = ["run", "profile", "bundle MB", "wheels MB", "wheels", "build s", "install s",
           "test rows", "bundle rows/s", "predict rows/s", "max abs diff"]

if __name__ == "__main__":
    main()
