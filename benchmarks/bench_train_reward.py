"""Reward models trained with and without ties (``prefpred train-reward``) on shared-all, CPU.

One grouped fold of shared-all (the folds of ``prefpred cv``: 5 folds, seed 42) is held out;
reward models are trained on a random subsample of the other four folds' pairs, with the bundled
MiniLM encoder and LoRA, once with Bradley-Terry dropping ties (``bt``, what TRL and OpenRLHF
do) and once with the tie-aware Davidson likelihood (``davidson``, its tie parameter learned
with the rewards). Each saved folder is scored on the held-out pairs through
``prefpred.rewards.scoring.score_pairs`` (what ``prefpred score-rewards`` runs). On those
held-out pairs we report

- the A-vs-B accuracy of the reward margin's sign on decisive (non-tie) pairs;
- the three-way log loss of the margin calibrated by each tie model of ``prefpred
  calibrate-rewards`` with an inner grouped 5-fold CV on the held-out pairs (fitted on four
  inner folds, scored on the fifth), the uncalibrated softmax and the class prior;
- for the tie-aware model, its own trained likelihood as it is (``as-trained``: scale 1, the
  learned tie parameter; no calibration at all);
- the same for the LightGBM feature model's margin (``logit_A - logit_B`` of its out-of-fold
  logits from ``prefpred cv --model lgbm``, trained on all four other folds) and for the
  response-length scorer, on the same held-out rows.

    nice -n 10 .venv/bin/python benchmarks/bench_train_reward.py [--train-pairs 1000]
        [--eval-pairs 800] [--max-length 128] [--no-record]

The CPU budget (2 shared cores, about 15 minutes for both models) sets the subsample; on a GPU
raise ``--train-pairs 0 --eval-pairs 0`` (all rows) and ``--max-length 512``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import WORK, append_result  # noqa: E402
from bench_reward_calibration import length_rewards, oof_margin  # noqa: E402

from prefpred.competitions import load_competition  # noqa: E402
from prefpred.data.folds import assign_folds  # noqa: E402
from prefpred.labels import TIE, A  # noqa: E402
from prefpred.metrics import score  # noqa: E402
from prefpred.probabilities import softmax  # noqa: E402
from prefpred.rewards.models import make_tie_model, oof_tie_scores, reward_folds  # noqa: E402

CALIBRATIONS = ("uncalibrated", "prior", "rao-kupper", "davidson", "multinomial")


def _subsample(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n <= 0 or n >= len(rows):
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))


def evaluate(margin: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
             ) -> tuple[float, dict[str, dict[str, float]]]:
    """A-vs-B accuracy on decisive pairs, and scores of each calibration (inner grouped CV)."""
    decisive = (y != TIE) & (margin != 0)
    pairwise = float(((margin > 0) == (y == A))[decisive].mean())
    inner = reward_folds(y, groups, 5, seed)
    results = oof_tie_scores(margin, y, inner)
    return pairwise, {name: score(y, softmax(results[name]["logits"]))
                      for name in CALIBRATIONS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, default=0, help="held-out fold of the 5 grouped folds")
    ap.add_argument("--train-pairs", type=int, default=1000, help="0: every training pair")
    ap.add_argument("--eval-pairs", type=int, default=800, help="0: the whole held-out fold")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--losses", nargs="+", default=["bt", "davidson"])
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="bf16 weights and autocast (fast on CPUs with AMX / AVX512-BF16)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lgbm-oof", type=Path, default=Path("runs/shared-all/lgbm"))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    from prefpred.rewards.scoring import score_pairs
    from prefpred.rewards.train import RewardConfig, fit_reward_model, save_reward_model

    table = load_competition("shared-all").load_train()
    folds = assign_folds(table, 5, args.seed)
    train_rows = _subsample(np.flatnonzero(folds != args.fold), args.train_pairs, args.seed)
    held_rows = _subsample(np.flatnonzero(folds == args.fold), args.eval_pairs, args.seed + 1)
    train, held = table.take(train_rows), table.take(held_rows)
    y, groups = held.labels(), held.groups()
    print(f"train {len(train)} pairs ({(train.labels() == TIE).mean():.1%} ties), held out "
          f"{len(held)} pairs of fold {args.fold}")
    params = dict(backbone="minilm", finetune="lora", lora_r=16, lora_alpha=32, lora_dropout=0.0,
                  lora_layers=[4, 5], max_length=args.max_length, epochs=args.epochs,
                  train_tokens=8192, max_batch_pairs=16, lr=5e-4, head_lr=2e-3, tie_lr=2e-2,
                  warmup_ratio=0.1, bf16=args.bf16, checkpoint_every=0, seed=args.seed)
    described = (f"MiniLM LoRA r16 on layers [4, 5] (+ head, pooler), max_length "
                 f"{args.max_length}, {args.epochs:g} epoch, lr 5e-4 / head 2e-3, "
                 f"{'bf16' if args.bf16 else 'fp32'}")
    rows = []

    def add(scorer: str, loss: str, margin: np.ndarray, train_s: float | str,
            score_s: float | str, extra: dict[str, dict[str, float]] | None = None) -> None:
        pairwise, scores = evaluate(margin, y, groups, args.seed)
        scores.update(extra or {})
        for name, s in scores.items():
            rows.append([scorer, loss, len(train) if loss != "-" else "-", len(held), name,
                         f"{s['log_loss']:.4f}", f"{s['accuracy']:.4f}", f"{s['ece']:.4f}",
                         f"{pairwise:.4f}", train_s, score_s])
        best = min(scores[n]["log_loss"] for n in ("rao-kupper", "davidson", "multinomial"))
        print(f"{scorer:<22} A-vs-B acc {pairwise:.4f}  best calibrated log loss {best:.4f}  "
              f"uncalibrated {scores['uncalibrated']['log_loss']:.4f}"
              + (f"  as-trained {scores['as-trained']['log_loss']:.4f}"
                 if "as-trained" in scores else ""))

    for loss in args.losses:
        cfg = RewardConfig(loss=loss, **params)
        t0 = time.perf_counter()
        result = fit_reward_model(train, cfg, progress=False)
        folder = save_reward_model(result, WORK / "train_reward" / f"minilm-{loss}")
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        frame = score_pairs(folder, held, batch_size=32, max_length=args.max_length,
                            dtype="bfloat16" if args.bf16 else "float32", progress=False)
        score_s = time.perf_counter() - t0
        margin = (frame["reward_a"] - frame["reward_b"]).to_numpy()
        extra = None
        tie = result.net.tie_parameter()
        if tie is not None:  # the trained likelihood, no calibration
            own = make_tie_model(loss, position_bias=False)
            own.coef_ = np.array([1.0, 0.0, tie])
            extra = {"as-trained": score(y, own.predict_proba(margin))}
            print(f"{loss}: learned tie parameter {tie:.4f}")
        print(f"{loss}: {result.summary['steps']} steps, loss {result.summary['first_loss']:.4f}"
              f" -> {result.summary['final_loss']:.4f}, train {train_s:.0f} s, score "
              f"{score_s:.0f} s")
        add(f"minilm-reward ({loss})", loss, margin, f"{train_s:.0f}", f"{score_s:.0f}", extra)

    if (args.lgbm_oof / "oof.parquet").exists():
        ra, rb = oof_margin(table, args.lgbm_oof, folds)
        add("lgbm-margin (cv oof)", "-", (ra - rb)[held_rows], "-", "-")
    else:
        print(f"no {args.lgbm_oof}/oof.parquet: the LightGBM margin is left out")
    la, lb = length_rewards(held)
    add("length", "-", la - lb, "-", "-")

    if not args.no_record:
        append_result(
            "Reward models trained with ties (train-reward)",
            ["scorer", "loss", "train pairs", "eval pairs", "calibration", "log loss",
             "accuracy", "ECE", "A-vs-B acc (decisive)", "train s", "score s"], rows,
            f"nice -n 10 python benchmarks/bench_train_reward.py --fold {args.fold} "
            f"--train-pairs {args.train_pairs} --eval-pairs {args.eval_pairs} --max-length "
            f"{args.max_length} --epochs {args.epochs:g}"
            + ("" if args.bf16 else " --no-bf16"),
            note=("shared-all, grouped 5-fold folds (seed 42, those of `prefpred cv`): fold "
                  f"{args.fold} held out ({len(held)} of its pairs, random), reward models "
                  f"trained on {len(train)} random pairs of the other four folds ({described}; "
                  "CPU budget of about 15 minutes for both on 2 shared cores). `bt` = "
                  "Bradley-Terry, ties dropped (TRL / OpenRLHF); `davidson` = the tie-aware "
                  "likelihood, tie parameter learned jointly. Each saved folder is scored with "
                  "score_pairs (= `prefpred score-rewards`). Calibrations on the held-out "
                  "margins: inner grouped 5-fold CV over the held-out pairs (`calibrate-rewards`"
                  " tie models); `as-trained` = the Davidson likelihood with the learned tie "
                  "parameter, no calibration. `lgbm-margin` = logit_A - logit_B of the "
                  "LightGBM out-of-fold logits (`prefpred cv --model lgbm`: trained on all "
                  "6,000+ pairs of the other folds, with features), `length` = log(1 + "
                  "characters), both on the same held-out rows."),
        )


if __name__ == "__main__":
    main()
