"""All features of a Kaggle-size table (57,477 rows, the real sample repeated) by
``compute_features`` with its compiled kernels, by the same function on polars alone
(``use_kernels=False``), and by the per-row Python reference that computes the same features, in
the same run.

Each measurement runs in a fresh subprocess (its peak RSS is its own; loading the table is not
timed but counts toward the peak). The two are interleaved, so drift on a shared machine hits
both alike; the median of the repeats is reported. Goal: at least 20x the reference's rows/s,
peak RSS under 4 GiB.

    .venv/bin/python benchmarks/bench_features.py [--rows 57477] [--repeats 3] [--reference-rows N]

``--reference-rows`` times the reference on the first N rows only (its cost per row is the same
everywhere: the table is the 1,000-row sample repeated); the default is every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_result, peak_rss_mib  # noqa: E402
from bench_load import KAGGLE_ROWS, build_file  # noqa: E402


def _load(path: str, rows: int | None):
    import numpy as np

    from prefpred.data.formats import load_table

    table = load_table(path)
    return table if rows is None or rows >= len(table) else table.take(np.arange(rows))


def run_child(which: str, path: str, rows: int | None) -> dict:
    """Time one implementation ("kernels", "polars" or "reference") on the table, in this
    process."""
    if which in ("kernels", "polars"):
        from prefpred.features import compute_features, kernels

        if which == "kernels" and not kernels.available():
            raise SystemExit("the compiled feature kernels are not installed (pip install -e .)")

        def features(table):
            return compute_features(table, use_kernels=which == "kernels")
    else:
        from prefpred.features.reference import reference_features as features

    table = _load(path, rows)
    t0, c0 = time.perf_counter(), time.process_time()
    feats = features(table)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert feats.height == len(table)
    return {"rows": len(table), "seconds": seconds, "cpu": cpu, "peak_mib": peak_rss_mib(),
            "columns": feats.width}


def check_same_features(path: Path, rows: int = 300) -> None:
    """Both implementations give the same values (on the first rows), before timing them."""
    import numpy as np

    from prefpred.features import compute_features
    from prefpred.features.reference import reference_features

    table = _load(str(path), rows)
    slow = reference_features(table)
    for use_kernels in (True, False):
        fast = compute_features(table, use_kernels=use_kernels)
        assert fast.columns == slow.columns
        for col in fast.columns[1:]:
            np.testing.assert_allclose(fast[col].to_numpy(), slow[col].to_numpy(), rtol=1e-9,
                                       atol=1e-12, err_msg=col)


def measure(which: str, path: Path, rows: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", which, str(path), str(rows or 0)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(path: Path, chunk_rows: int = 4096) -> None:
    """Print (not record) where one chunk's time goes, on one polars thread, both paths: best of
    three per step. Run as ``POLARS_MAX_THREADS=1 python benchmarks/bench_features.py
    --profile``."""
    import numpy as np
    import polars as pl

    from prefpred.features import build as B
    from prefpred.features import kernels

    table = _load(str(path), chunk_rows)
    df = table.df.select("prompt", "response_a", "response_b", "source").with_row_index("_r")
    config = B.FeatureConfig()
    counts = config.count_stats()
    long = B._long_turns(df, {"a": "response_a", "b": "response_b"})
    docs = df.select(*[pl.col(c).list.join(B.SEP).str.to_lowercase().alias(k)
                       for k, c in (("p", "prompt"), ("a", "response_a"), ("b", "response_b"))])
    turns = B._turn_table(long, counts, False)
    pturns = B._turn_table(B._long_turns(df, {"p": "prompt"}), B._PROMPT_COUNTS, False)
    tokens = pl.concat([pturns.select("_r", "side", "th"), turns.select("_r", "side", "th")]
                       ).explode("th").drop_nulls("th").rename({"th": "h"})
    steps = {
        "whole chunk": lambda fast: B._chunk_features(df, config, fast),
        "turn table (counts, word trigrams)": lambda fast: B._turn_table(long, counts, fast),
        "word overlap sums": lambda fast: (kernels.word_overlap(docs["p"], docs["a"], docs["b"])
                                           if fast else B._word_counts(tokens)),
        "character-trigram Jaccard": lambda fast: B._char_jaccard(docs, df["_r"], fast),
    }
    print(f"one chunk of {df.height} rows, {pl.thread_pool_size()} polars thread(s); "
          "milliseconds, best of 3")
    for name, step in steps.items():
        ms = []
        for fast in (False, True):
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                step(fast)
                best = min(best, time.perf_counter() - t0)
            ms.append(best * 1000)
        print(f"{name:>36}: polars alone {ms[0]:7.1f}, kernels {ms[1]:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=KAGGLE_ROWS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-rows", type=int, default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="print where one 4,096-row chunk's time goes (records nothing)")
    args = ap.parse_args()
    if args.child:
        which, path, rows = args.child
        print(json.dumps(run_child(which, path, int(rows) or None)))
        return
    if args.profile:
        profile(build_file(args.rows))
        return
    path = build_file(args.rows)
    check_same_features(path)
    ref_rows = min(args.reference_rows or args.rows, args.rows)
    runs: dict[str, list[dict]] = {"kernels": [], "polars": [], "reference": []}
    for i in range(args.repeats):  # interleaved
        for which in runs:
            runs[which].append(measure(which, path, ref_rows if which == "reference" else None))
        print(f"repeat {i + 1}: " + ", ".join(f"{w} {r[-1]['seconds']:.1f} s"
                                              for w, r in runs.items()), flush=True)
    summary = {}
    for which, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        summary[which] = {"rows": rs[0]["rows"], "seconds": sec, "rows_per_s": rs[0]["rows"] / sec,
                          "cpu": statistics.median(r["cpu"] for r in rs),
                          "peak_mib": max(r["peak_mib"] for r in rs)}
    ref_rate = summary["reference"]["rows_per_s"]
    for which, s in summary.items():
        print(f"{which:>10}: {s['rows']} rows, {s['rows_per_s']:,.0f} rows/s ({s['seconds']:.2f} s "
              f"wall, {s['cpu']:.2f} s CPU), peak RSS {s['peak_mib']:.0f} MiB")
    ratio = summary["kernels"]["rows_per_s"] / ref_rate
    print(f"speed-up: {ratio:.1f}x with kernels (goal >= 20x), "
          f"{summary['polars']['rows_per_s'] / ref_rate:.1f}x polars alone; peak "
          f"{summary['kernels']['peak_mib']:.0f} MiB (goal < 4096)")
    if not args.no_record:
        k, p, r = summary["kernels"], summary["polars"], summary["reference"]
        append_result(
            "Features of a Kaggle-size table: polars against a per-row Python reference",
            ["rows", "features", "kernels rows/s", "kernels s (wall / CPU)",
             "kernels peak RSS MiB", "polars alone rows/s", "polars alone s (wall / CPU)",
             "reference rows timed", "reference rows/s", "reference s (wall / CPU)",
             "speed-up kernels (goal >= 20x, < 4096 MiB)", "speed-up polars alone"],
            [[k["rows"], runs["kernels"][0]["columns"], k["rows_per_s"],
              f"{k['seconds']:.1f} / {k['cpu']:.1f}", k["peak_mib"], p["rows_per_s"],
              f"{p['seconds']:.1f} / {p['cpu']:.1f}", r["rows"], r["rows_per_s"],
              f"{r['seconds']:.1f} / {r['cpu']:.1f}", f"{ratio:.1f}x",
              f"{p['rows_per_s'] / ref_rate:.1f}x"]],
            f"python benchmarks/bench_features.py --rows {args.rows} --repeats {args.repeats}"
            + (f" --reference-rows {ref_rows}" if ref_rows != args.rows else ""),
            note="Every feature of `prefpred.features` (both responses, all turns and the last "
                 "turn, prompt, pair similarities) by `compute_features` (polars, chunks of "
                 "4,096 rows) and by `prefpred.features.reference` (one row at a time: Python "
                 "`re`, `Counter`, sets), checked equal on the first 300 rows first. Each timing "
                 "in a fresh subprocess, interleaved; median of the repeats; loading the CSV is "
                 "not timed but is in the peak RSS. The reference's rows/s comes from the rows "
                 "it timed. CPU seconds count every thread.",
        )


if __name__ == "__main__":
    main()
