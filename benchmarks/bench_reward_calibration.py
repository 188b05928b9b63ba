"""Reward-model calibration with ties on shared-all (7,633 pairs, 5-fold grouped out of fold).

Scalar scorers stand in for a reward model, each giving one score per response:

- ``length``: log(1 + characters of the response), the classic length bias;
- ``feature-BT``: a Bradley-Terry reward on every per-response feature of
  :mod:`prefpred.features`, trained the way TRL and OpenRLHF train reward models: ties dropped,
  logistic loss on A-vs-B. It is fitted out of fold (on the other folds' non-tie pairs), so every
  row's reward comes from a model that never saw it.
- ``lgbm-margin`` (when ``--oof`` points at a ``prefpred cv --model lgbm`` run with the same
  folds): the feature model's margin ``logit_A - logit_B``.

Each scorer's margin ``reward_a - reward_b`` is then turned into (A, B, TIE) probabilities by
every tie model, each fitted on the other folds and scored on the held-out one (the same grouped
folds as ``prefpred cv``), against two baselines: the uncalibrated softmax of the margin
(``softmax(m/2, -m/2, 0)``, i.e. Bradley-Terry with a tie logit of 0) and the class prior.

    .venv/bin/python benchmarks/bench_reward_calibration.py [--folds 5] [--seed 42] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_result  # noqa: E402

from prefpred.competitions import load_competition  # noqa: E402
from prefpred.data.folds import assign_folds  # noqa: E402
from prefpred.labels import TIE, A  # noqa: E402
from prefpred.metrics import score, score_by  # noqa: E402
from prefpred.probabilities import softmax  # noqa: E402
from prefpred.rewards.models import oof_tie_scores  # noqa: E402

SIDES = ("response_a", "response_b")


def feature_bt_rewards(table, folds: np.ndarray, C: float = 1.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold Bradley-Terry rewards on the per-response features of
    :mod:`prefpred.features` (every ``a_*`` / ``b_*`` statistic), trained the way TRL and
    OpenRLHF train reward models: ties dropped, logistic loss on A-vs-B, each pair in both orders
    (so the reward cannot learn the position)."""
    from sklearn.linear_model import LogisticRegression

    from prefpred.features import compute_features

    feats = compute_features(table)
    stats = [c[2:] for c in feats.columns if c.startswith("a_")]
    fa = feats.select([f"a_{s}" for s in stats]).to_numpy()
    fb = feats.select([f"b_{s}" for s in stats]).to_numpy()
    y = table.labels()
    ra, rb = np.empty(len(y)), np.empty(len(y))
    for k in np.unique(folds):
        train = (folds != k) & (y != TIE)
        diff = fa[train] - fb[train]
        scale = diff.std(0) + 1e-9
        target = (y[train] == A).astype(int)
        lr = LogisticRegression(C=C, fit_intercept=False, max_iter=5000)
        lr.fit(np.vstack([diff, -diff]) / scale, np.concatenate([target, 1 - target]))
        w = lr.coef_[0] / scale
        test = folds == k
        ra[test], rb[test] = fa[test] @ w, fb[test] @ w
    return ra, rb


def oof_margin(table, path: Path, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The feature model's own margin, logit_A - logit_B of its out-of-fold logits (read from a
    `prefpred cv` run folder made with the same folds), as a (reward_a, reward_b) pair."""
    from prefpred.oof import join_oof

    arrays = join_oof({"lgbm": path})
    arrays.logits = arrays.logits["lgbm"]
    by_id = dict(zip(arrays.ids, range(len(arrays.ids)), strict=True))
    rows = np.array([by_id[i] for i in table.ids])
    if not (arrays.folds[rows] == folds).all():
        raise SystemExit(f"{path}: its CV folds differ from this benchmark's")
    z = arrays.logits[rows]
    return z[:, 0], z[:, 1]


def length_rewards(table) -> tuple[np.ndarray, np.ndarray]:
    out = table.df.select([pl.col(c).list.join("").str.len_chars().cast(pl.Float64).log1p()
                           .alias(c) for c in SIDES])
    return out["response_a"].to_numpy(), out["response_b"].to_numpy()


def tie_features(table) -> tuple[np.ndarray, list[str]]:
    """Pair features the flexible model's tie odds may use: overall length and prompt length."""
    out = table.df.select(
        (pl.col("response_a").list.join("").str.len_chars()
         + pl.col("response_b").list.join("").str.len_chars()).cast(pl.Float64).log1p()
        .alias("log_total_len"),
        pl.col("prompt").list.join("").str.len_chars().cast(pl.Float64).log1p()
        .alias("log_prompt_len"),
    )
    return out.to_numpy(), out.columns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--oof", type=Path, default=Path("runs/shared-all/lgbm"),
                    help="a `prefpred cv --model lgbm` run folder: its margin is a third scorer")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    comp = load_competition("shared-all")
    table = comp.load_train()
    y = table.labels()
    folds = assign_folds(table, args.folds, args.seed)
    sources = table.column("source").to_numpy()
    source_names = sorted(set(sources.tolist()))
    x, x_names = tie_features(table)
    src_names = [f"source={s}" for s in source_names[1:]]  # one-hot, first source as reference
    src_x = np.stack([(sources == s).astype(float) for s in source_names[1:]], axis=1)

    t0 = time.perf_counter()
    scorers = {"length": length_rewards(table),
               "feature-BT": feature_bt_rewards(table, folds)}
    if (args.oof / "oof.parquet").exists():
        scorers["lgbm-margin"] = oof_margin(table, args.oof, folds)
    else:
        print(f"no {args.oof}/oof.parquet: run `prefpred cv --competition shared-all --model lgbm`"
              " for the lgbm-margin scorer")
    rows = []
    for scorer, (ra, rb) in scorers.items():
        margin = ra - rb
        decisive = y != TIE
        pairwise_acc = float(((margin > 0) == (y == A))[decisive & (margin != 0)].mean())
        res = oof_tie_scores(margin, y, folds)
        res["multinomial+lengths"] = oof_tie_scores(
            margin, y, folds, models=("multinomial",), features=x,
            feature_names=x_names)["multinomial"]
        res["multinomial+lengths+source"] = oof_tie_scores(
            margin, y, folds, models=("multinomial",), features=np.hstack([x, src_x]),
            feature_names=[*x_names, *src_names])["multinomial"]
        for name, r in res.items():
            proba = softmax(r["logits"])
            s = score(y, proba)
            per = score_by(y, proba, sources)
            per_ll = {g: ll for g, ll in zip(per["group"], per["log_loss"], strict=True)}
            rows.append([scorer, name, s["log_loss"], s["accuracy"], s["ece"],
                         *[per_ll[src] for src in source_names], pairwise_acc])
        print(f"{scorer}: A-vs-B accuracy of the margin on decisive pairs {pairwise_acc:.3f}")
    seconds = time.perf_counter() - t0
    recorded = [[r[0], r[1], *[f"{v:.4f}" for v in r[2:]]] for r in rows]
    header = ["scorer", "calibration", "log loss", "accuracy", "ECE",
              *[f"log loss {s}" for s in source_names], "margin A-vs-B acc (no ties)"]
    print("sources:", ", ".join(source_names))
    for row in rows:
        print(f"{row[0]:<9} {row[1]:<27} ll {row[2]:.4f}  acc {row[3]:.3f}  ece {row[4]:.4f}  "
              + "  ".join(f"{v:.3f}" for v in row[5:-1]))
    print(f"({seconds:.1f} s for {len(scorers)} scorers x {len(rows) // len(scorers)} "
          "calibrations, all out of fold)")
    best = {sc: min(r[2] for r in rows if r[0] == sc and r[1] not in ("uncalibrated", "prior"))
            for sc in scorers}
    for sc in scorers:
        base = next(r[2] for r in rows if r[0] == sc and r[1] == "uncalibrated")
        prior = next(r[2] for r in rows if r[0] == sc and r[1] == "prior")
        print(f"{sc}: best tie model {best[sc]:.4f} vs uncalibrated {base:.4f}, prior {prior:.4f}")
    if not args.no_record:
        append_result(
            "Reward calibration with ties on shared-all (out-of-fold log loss)",
            header, recorded,
            f"python benchmarks/bench_reward_calibration.py --folds {args.folds} "
            f"--seed {args.seed}",
            note=(f"{len(table)} pairs, {args.folds}-fold grouped folds (seed {args.seed}, the "
                  "folds of `prefpred cv`). Scorers: `length` = log(1 + characters) per "
                  "response; `feature-BT` = a Bradley-Terry reward on every per-response "
                  "feature of prefpred.features, trained out of fold with ties dropped (as TRL / "
                  "OpenRLHF do); `lgbm-margin` = logit_A - logit_B of the LightGBM feature "
                  "model's out-of-fold logits (`prefpred cv --model lgbm`, same folds). "
                  "`uncalibrated` = softmax(m/2, -m/2, 0) of the margin m = reward_a - reward_b; "
                  "`prior` = training-fold class frequencies; each tie model is fitted on four "
                  "folds and scored on the fifth. `multinomial+lengths` lets the tie odds "
                  "depend on log total response length and log prompt length, "
                  "`+source` also on the data set (one-hot; tie rates run from 11% in PandaLM "
                  "to 31% in the Kaggle sample). The last column is the A-vs-B accuracy of the "
                  "margin's sign on decisive pairs. No pretrained reward model is installed "
                  "offline here: `prefpred score-rewards` output plugs into the same code."),
        )


if __name__ == "__main__":
    main()
