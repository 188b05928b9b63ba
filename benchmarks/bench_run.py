"""``prefpred run configs/demo.toml`` cold and warm, stage by stage, for a given checkout of the
code; and the TF-IDF and LightGBM cross-validations of shared-all one after the other.

Cold: a fresh output folder, a fresh feature cache and a fresh embedding cache (a temporary
working folder). Warm: the same command again, nothing changed. The times are the run's own
``run.json`` / ``RunResult`` stage times and its per-model lines; the wall time includes
starting Python. ``--code DIR`` times another checkout (e.g. the commit before a change, made
with ``git worktree add``), with this project's data and competitions.

    python benchmarks/bench_run.py --label after [--code DIR] [--jobs N] [--cv]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import DATA, PROJECT_ROOT, append_result  # noqa: E402

MODEL_LINE = re.compile(r"^(\w[\w.+=-]*): (out-of-fold log loss [0-9.]+ \((\d+) s\)|refitted on "
                        r"all \d+ rows, predicted \d+ test rows \((\d+) s\))")


def _config(work: Path, jobs: int | None) -> Path:
    text = (PROJECT_ROOT / "configs" / "demo.toml").read_text()
    text = re.sub(r'out_dir = "[^"]*"', f'out_dir = "{work / "run"}"', text)
    text = re.sub(r'submission = "[^"]*"', f'submission = "{work / "submission.csv"}"', text)
    text = re.sub(r'report = "[^"]*"', f'report = "{work / "report.html"}"', text)
    text = re.sub(r"(?m)^jobs = .*\n", "", text)
    if jobs is not None:
        text = text.replace("seed = 42\n", f"seed = 42\njobs = {jobs}\n", 1)
    path = work / "demo.toml"
    path.write_text(text)
    return path


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "PREFPRED_DATA_ROOT": str(DATA),
            "PREFPRED_COMPETITIONS": str(PROJECT_ROOT / "competitions"), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def run_once(code: Path, work: Path, config: Path) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "prefpred.cli", "run", str(config)],
                         cwd=work, env=_env(code), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"prefpred run failed:\n{res.stderr}")
    record = json.loads((work / "run" / "run.json").read_text())
    final = re.search(r"final: (.+?), out-of-fold log loss ([0-9.]+)", res.stdout)
    return {"wall": wall, "record": record, "final": final.group(1) if final else "?",
            "oof": float(final.group(2)) if final else float("nan"), "stdout": res.stdout}


def stage_rows(label: str, kind: str, result: dict, timings: dict[str, float]) -> list[list]:
    """The run's stages, its base models' CV and refit times, and the command's wall time."""
    rows = [[label, kind, stage, f"{seconds:.1f}"] for stage, seconds in timings.items()]
    for line in result["stdout"].splitlines():
        m = MODEL_LINE.match(line)
        if m:
            what = "CV" if m.group(3) else "refit + predict"
            rows.append([label, kind, f"  {m.group(1)} {what}", m.group(3) or m.group(4)])
    return rows + [[label, kind, "wall (command)", f"{result['wall']:.1f}"]]


def cv_seconds(code: Path, work: Path, model: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "prefpred.cli", "cv", "--competition",
                          "shared-all", "--model", model, "--run-dir", str(work / "cv")],
                         cwd=work, env=_env(code), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"prefpred cv failed:\n{res.stderr}")
    line = next(x for x in res.stdout.splitlines() if "│ ALL" in x)
    return time.perf_counter() - t0, line.split("│")[3].strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True, help="before / after: names the rows")
    ap.add_argument("--code", type=Path, default=PROJECT_ROOT,
                    help="checkout whose prefpred package runs (default: this one)")
    ap.add_argument("--jobs", type=int, default=None, help="[run] jobs (omit for old code)")
    ap.add_argument("--cv", action="store_true",
                    help="also time TF-IDF and LightGBM 5-fold CV of shared-all, one by one")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefpred-bench-run-"))
    try:
        config = _config(work, args.jobs)
        cold = run_once(args.code, work, config)
        warm = run_once(args.code, work, config)
        rows = []
        for kind, result in (("cold", cold), ("warm", warm)):
            timings = dict(result["record"]["timings_s"]) if kind == "cold" else None
            if kind == "warm":  # a run whose outputs were reused keeps the cold record
                timings = _warm_timings(result)
            rows += stage_rows(args.label, kind, result, timings)
            print(f"{args.label} {kind}: {result['wall']:.1f} s wall; final {result['final']} "
                  f"{result['oof']:.4f}")
        cv_rows = []
        if args.cv:
            for model in ("lgbm", "tfidf"):
                seconds, loss = cv_seconds(args.code, work, model)
                cv_rows.append([args.label, model, f"{seconds:.1f}", loss])
                print(f"{args.label} cv {model}: {seconds:.1f} s, log loss {loss}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.no_record:
        return
    command = (f"python benchmarks/bench_run.py --label {args.label}"
               + (" --code CHECKOUT" if args.code != PROJECT_ROOT else "")
               + (f" --jobs {args.jobs}" if args.jobs else "") + (" --cv" if args.cv else ""))
    append_result(
        "prefpred run configs/demo.toml: time per stage, cold and warm",
        ["code", "run", "stage", "seconds"], rows, command,
        note="Cold: fresh output folder, feature cache and embedding cache; warm: the same "
             "command again. Stage times from the run itself; `wall (command)` includes "
             "starting Python. `before` is the code before the speed-up (a `git worktree` of "
             "that commit, passed as `--code`), `after` this one; both on shared-all minus the "
             "hold-out, with the demo's three base models. Goals: cold `make demo` <= 5 min, "
             "warm <= a tenth of cold.")
    if cv_rows:
        append_result(
            "TF-IDF and LightGBM 5-fold CV of shared-all, one after the other",
            ["code", "model", "seconds (command)", "log loss ALL"], cv_rows, command,
            note="`prefpred cv --competition shared-all --model MODEL` in the same working "
                 "folder, the LightGBM run first (it fills the feature cache the run above "
                 "left). Goal: TF-IDF no slower than LightGBM; its log loss within 0.002 of "
                 "0.9588.")


def _warm_timings(result: dict) -> dict[str, float]:
    """Stage times of the warm run, from its stdout table ('time per stage')."""
    out, take = {}, False
    for line in result["stdout"].splitlines():
        if "time per stage" in line:
            take = True
            continue
        if take and line.startswith("│"):
            stage, seconds = [c.strip() for c in line.strip("│").split("│")]
            out[stage] = float(seconds)
        elif take and line.startswith("└"):
            break
    if not out:  # older code prints no stage table: its run.json is rewritten every run
        out = {"total": result["record"]["timings_s"]["total"]}
    return out


if __name__ == "__main__":
    main()
