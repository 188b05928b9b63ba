"""The data levers of the winning LMSYS / WSDM teams, measured honestly on shared-all: labels
from several votes, distillation from a stacked teacher (nested teacher targets), pseudo-labels
on the MT-Bench pairs no human judged, and the two-class sets (hh-rlhf harmless, LLMBar) added
to training.

Every variant is 5-fold grouped cross-validation on the same folds (the fold of each prompt
group in shared-all as read; new groups of added data by a stable hash). The student is the
TF-IDF model with its defaults; the teacher is a blend of TF-IDF and LightGBM, refitted 25
times per base model (nested targets, :mod:`prefpred.distill`). Scores are out-of-fold log
loss on human labels only: on every shared-all row of the variant (MT-Bench / PandaLM rows are
merged per pair when their votes are combined, so that row set differs) and on the Kaggle
arena rows (the same 1,000+ rows in every variant, the yardstick), and the cross-entropy
against the vote shares where rows have several votes.

    nice -n 10 .venv/bin/python benchmarks/bench_data_levers.py [--no-record] [--only NAME...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import WORK, append_result  # noqa: E402

COMMAND = "nice -n 10 .venv/bin/python benchmarks/bench_data_levers.py"
VOTED = ("mt-bench-human", "pandalm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()

    import polars as pl

    from prefpred.competitions import data_root, load_competition
    from prefpred.data.folds import assign_folds
    from prefpred.data.formats import load_table
    from prefpred.data.table import PreferenceTable
    from prefpred.data.votes import rebuild_labels
    from prefpred.distill import Distillation, Teacher, TeacherModel, pseudo_folds
    from prefpred.metrics import score, table_scoring
    from prefpred.models.base import build_model
    from prefpred.probabilities import softmax
    from prefpred.stages import run_cv

    comp = load_competition("shared-all")
    base = comp.load_train()
    base_folds = assign_folds(base, comp.n_folds, comp.seed)

    def folds_of(table: PreferenceTable) -> np.ndarray:
        return pseudo_folds(base, base_folds, table)

    def relabel(mode: str) -> PreferenceTable:
        parts = []
        for source in base.sources():
            part = base.filter(pl.col("source") == source)
            parts.append(rebuild_labels(part, mode) if source in VOTED else part)
        return PreferenceTable.concat(parts)

    def scores(table, logits, label, seconds, note=""):
        y = table.labels()
        proba = softmax(logits)
        shared = np.isin(table.column("source").to_numpy(), comp_sources)
        kaggle = table.column("source").to_numpy() == "lmsys-kaggle"
        soft = table_scoring(table)["soft"]
        soft = np.full((len(table), 3), np.nan) if soft is None else soft
        s_all = score(y[shared], proba[shared], soft=soft[shared])
        s_kag = score(y[kaggle], proba[kaggle])
        row = [label, int(shared.sum()), f"{s_all['log_loss']:.4f}", f"{s_kag['log_loss']:.4f}",
               f"{s_all['ce_soft']:.4f}", round(seconds), note]
        print(row, flush=True)
        return row

    comp_sources = base.sources()
    work = WORK / "data_levers"
    work.mkdir(parents=True, exist_ok=True)

    def student_cv(table, label, distill=None):
        folds = folds_of(table)
        t0 = time.perf_counter()
        train_rows = None
        if distill is not None:
            def train_rows(k, idx):
                return distill.fold_table(table, k, idx)
        res = run_cv(table, lambda: build_model("tfidf", {}), folds=folds, progress=False,
                     train_rows=train_rows, name=label)
        return res.oof_logits, time.perf_counter() - t0

    want = set(args.only or [])

    def wanted(name):
        return not want or name in want

    rows = []
    if wanted("labels"):
        for mode in ("as read", "majority", "shares", "dawid-skene"):
            table = base if mode == "as read" else relabel(mode)
            logits, sec = student_cv(table, f"labels-{mode}")
            rows.append(scores(table, logits, f"student, labels: {mode}", sec,
                               "MT-Bench one row per vote, PandaLM majority" if mode == "as read"
                               else "MT-Bench and PandaLM votes merged per pair"))
    if wanted("distill") or wanted("pseudo"):
        teacher = Teacher("bench", (TeacherModel("tfidf", "tfidf", {}),
                                    TeacherModel("lgbm", "lgbm", {})), stacker="blend")
        pool = load_table(data_root() / "mt-bench-human", "mt-bench-unjudged")
        t0 = time.perf_counter()
        full = Distillation(teacher, alpha=0.5, pseudo=pool, pseudo_weight=0.5)
        full.prepare(base, base_folds, cache=work / "teacher", say=print)
        t_teacher = time.perf_counter() - t0
        rows.append(scores(base, full.logits.outer, "teacher: blend(tfidf, lgbm), out of fold",
                           t_teacher, f"{len(teacher.models)} x 25 fits, nested"))
        if wanted("distill"):
            plain = dataclasses.replace(full, pseudo=None)
            plain.logits = full.logits
            logits, sec = student_cv(base, "distilled", plain)
            rows.append(scores(base, logits, "student distilled (alpha 0.5, T 1)", sec,
                               "nested teacher targets"))
        if wanted("pseudo"):
            alone = dataclasses.replace(full, alpha=0.0)
            alone.logits, alone.pseudo_fold = full.logits, full.pseudo_fold
            logits, sec = student_cv(base, "pseudo", alone)
            rows.append(scores(base, logits, f"student + {len(pool)} pseudo-labelled MT-Bench "
                               "pairs (weight 0.5)", sec, "unjudged pairs, soft teacher labels"))
            logits, sec = student_cv(base, "distilled-pseudo", full)
            rows.append(scores(base, logits, "student distilled + pseudo-labels", sec, ""))
    if wanted("two-class"):
        extra = load_competition("shared-all-twoclass").load_train()
        logits, sec = student_cv(extra, "two-class")
        rows.append(scores(extra, logits, "student + hh-rlhf + LLMBar (two-class likelihood)",
                           sec, f"{len(extra) - len(base)} two-class rows, training only"))
    if not args.no_record and rows:
        append_result(
            "Data levers on shared-all (issue 12)",
            ["variant", "scored rows", "OOF log loss (shared-all)", "OOF log loss (Kaggle rows)",
             "CE vs vote shares", "time (s)", "note"], rows, COMMAND,
            note="Student: TF-IDF defaults; 5 grouped folds, the same fold per prompt group in "
                 "every variant; scores on human labels only (pseudo-labelled and two-class "
                 "rows only train). CE vs vote shares: rows with several votes.")


if __name__ == "__main__":
    main()
