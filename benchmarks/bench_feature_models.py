"""Quality of the feature models: 5-fold grouped out-of-fold log loss on ``shared-all`` (7,633
rows), overall and per source, beside the uniform forecast and the class prior.

Models: uniform, prior, an 8-feature length LightGBM (the issue's reference, no source
feature), the LightGBM model with its defaults, the LightGBM model with tuned parameters (saved
by ``prefpred tune``; pass their name with ``--params``), and the TF-IDF model. Goal: LightGBM
overall <= 0.95 and the Kaggle rows < 1.08.

    .venv/bin/python benchmarks/bench_feature_models.py [--params lgbm-shared-all] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import WORK, append_result  # noqa: E402

SOURCES = ["lmsys-kaggle", "mt-bench-human", "autoj-pairwise", "pandalm", "llmeval2"]


def model_specs(tuned: str | None) -> dict[str, tuple[str, dict]]:
    specs = {
        "uniform": ("uniform", {}),
        "prior": ("prior", {}),
        "lgbm-length8": ("lgbm", {"feature_set": "length", "use_source": False}),
        "lgbm": ("lgbm", {}),
        "tfidf": ("tfidf", {}),
    }
    if tuned:
        from prefpred.params import load_params

        specs[f"lgbm-tuned ({tuned})"] = ("lgbm", load_params(tuned))
    return specs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default=None, help="saved tuned LightGBM parameters (name/file)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of the model labels")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    from prefpred.competitions import load_competition
    from prefpred.models.base import build_model
    from prefpred.stages import run_cv

    comp = load_competition("shared-all")
    table = comp.load_train()
    specs = model_specs(args.params)
    if args.models:
        specs = {k: v for k, v in specs.items() if k in args.models or k.split(" ")[0] in args.models}
    rows = []
    for label, (name, params) in specs.items():
        t0 = time.perf_counter()
        res = run_cv(table, lambda n=name, p=params: build_model(n, p),
                     name=label.split(" ")[0], n_folds=args.folds, seed=comp.seed,
                     run_dir=WORK / "quality", progress=False)
        seconds = time.perf_counter() - t0
        by = {r["group"]: r for r in res.scores.to_dicts()}
        line = [label, json.dumps(params, sort_keys=True) if params else "defaults",
                by["ALL"]["log_loss"], *[by[s]["log_loss"] for s in SOURCES],
                by["ALL"]["accuracy"], f"{seconds:.0f}"]
        rows.append(line)
        print(f"{label:<28} ALL {by['ALL']['log_loss']:.4f}  " + "  ".join(
            f"{s} {by[s]['log_loss']:.4f}" for s in SOURCES) + f"  ({seconds:.0f} s)", flush=True)
    if not args.no_record:
        append_result(
            "Feature models: 5-fold grouped out-of-fold log loss on shared-all",
            ["model", "parameters", "log loss ALL (goal <= 0.95)", "lmsys-kaggle (goal < 1.08)",
             "mt-bench-human", "autoj-pairwise", "pandalm", "llmeval2", "accuracy ALL",
             "seconds (fit + predict, 5 folds)"],
            rows,
            "python benchmarks/bench_feature_models.py"
            + (f" --params {args.params}" if args.params else "")
            + (f" --folds {args.folds}" if args.folds != 5 else ""),
            note="shared-all: 7,633 rows of five public sets; folds grouped by normalised prompt "
                 "and stratified by source x label (seed 42), the same for every model. "
                 "`lgbm-length8` is the issue's reference (8 length features, no source); "
                 "`lgbm` adds every feature of `prefpred.features` and the source categorical; "
                 "`lgbm-tuned` uses the best of the trials saved by `prefpred tune --model lgbm "
                 "--study lgbm-shared-all` (two workers on one SQLite study, 31 trials, 5-fold "
                 "CV each). Seconds: fit and predict over the 5 folds (features read from the "
                 "`prefpred features build` cache), on a machine shared with other jobs.",
        )


if __name__ == "__main__":
    main()
