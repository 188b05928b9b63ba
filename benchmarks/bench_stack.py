"""Base models, blend and stacks on shared-all, each with and without calibration, out of fold.

Reads the ``oof.parquet`` of each base model from a run folder that ``prefpred cv`` filled (all
with the same 5 grouped folds), then scores every base model, the weight blend and the logistic
and LightGBM stacks (nested CV), each raw and after each calibrator (itself fitted out of fold):
log loss overall and per source, accuracy, ECE. Issue 5's goals: the calibrated stack beats the
best single model's out-of-fold log loss and reaches at most 0.93; ECE after calibration at most
0.02.

    prefpred cv --competition shared-all --model lgbm       # ... and tfidf, backbone
    .venv/bin/python benchmarks/bench_stack.py --run-dir runs/shared-all --models lgbm tfidf backbone
    .venv/bin/python benchmarks/bench_stack.py ... --plot runs/stack-reliability.png --no-record
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_result  # noqa: E402

from prefpred.competitions import load_competition  # noqa: E402
from prefpred.features.lengths import length_features, pair_lengths  # noqa: E402
from prefpred.oof import align_by_id, join_oof  # noqa: E402
from prefpred.probabilities import softmax  # noqa: E402
from prefpred.report import write_reliability_png  # noqa: E402
from prefpred.stack import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--competition", default="shared-all")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/shared-all"))
    ap.add_argument("--models", nargs="+", required=True,
                    help="base model run folders under --run-dir (each with oof.parquet)")
    ap.add_argument("--stackers", nargs="+", default=["blend", "logistic", "lgbm"])
    ap.add_argument("--calibrations", nargs="+",
                    default=["temperature", "vector", "temperature_by_length"])
    ap.add_argument("--features", action="store_true",
                    help="give the stackers the pair length features too")
    ap.add_argument("--plot", type=Path, help="reliability diagram PNG of the best stack")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    table = load_competition(args.competition).load_train()
    features = length_features(table) if args.features else None
    data = join_oof({m: args.run_dir / m for m in args.models}, features=features)
    lengths = align_by_id(pl.DataFrame({"id": table.ids, "n": pair_lengths(table)}), data.ids,
                          missing="has no training row")["n"].to_numpy()
    t0 = time.perf_counter()
    report = evaluate(data, stackers=args.stackers, calibrations=args.calibrations,
                      lengths=lengths)
    seconds = time.perf_counter() - t0
    scores = report.scores
    sources = sorted(set(data.sources.tolist()))
    overall = scores.filter(pl.col("group") == "ALL")
    best_single = overall.filter(pl.col("model").is_in(args.models)
                                 & (pl.col("calibration") == "none"))["log_loss"].min()
    rows = []
    for r in overall.iter_rows(named=True):
        per = {g["group"]: g["log_loss"] for g in scores.filter(
            (pl.col("model") == r["model"]) & (pl.col("calibration") == r["calibration"])
        ).iter_rows(named=True)}
        rows.append([r["model"], r["calibration"], f"{r['log_loss']:.4f}",
                     f"{r['accuracy']:.4f}", f"{r['ece']:.4f}",
                     *[f"{per[s]:.4f}" for s in sources],
                     f"{r['log_loss'] - best_single:+.4f}"])
        print("  ".join(str(v) for v in rows[-1]))
    print(f"best single model (raw): {best_single:.4f}; {seconds:.1f} s")
    if args.plot:
        stacks = overall.filter(~pl.col("model").is_in(args.models)).sort("log_loss")
        best = stacks.row(0, named=True)
        from prefpred.calibration import calibrate_out_of_fold

        logits = report.oof_logits[best["model"]]
        forecasts = {f"{best['model']} (raw)": softmax(logits)}
        if best["calibration"] != "none":
            forecasts[f"{best['model']} + {best['calibration']}"] = softmax(
                calibrate_out_of_fold(logits, data.y, data.folds, best["calibration"],
                                      lengths=lengths))
        write_reliability_png(args.plot, data.y, forecasts,
                              title=f"{args.competition}: out of fold")
        print(f"wrote {args.plot}")
    if not args.no_record:
        append_result(
            f"Stacking and calibration on {args.competition} (out of fold)",
            ["model", "calibration", "log loss", "accuracy", "ECE",
             *[f"log loss {s}" for s in sources], "vs best single"],
            rows,
            "python benchmarks/bench_stack.py --run-dir " + str(args.run_dir) + " --models "
            + " ".join(args.models) + (" --features" if args.features else ""),
            note=("Base models' out-of-fold logits from `prefpred cv` (same grouped folds); "
                  "blend and stacks fitted with nested CV (the inner search sees only the "
                  "training folds); every calibrator fitted out of fold on top. Goals: "
                  "calibrated stack < best single model and <= 0.93; ECE <= 0.02."),
        )


if __name__ == "__main__":
    main()
