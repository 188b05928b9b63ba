"""The bundled MiniLM backbone on shared-all (7,633 real rows), on the CPU.

Two runs, each with the CV runner in a fresh run folder (cold caches, nothing resumed):

- ``minilm-cpu:0``: MiniLM fine-tuned with LoRA (each pair with its swap in the same step, swap
  averaging at prediction), fold 0 only;
- ``minilm-budget:all``: the budget preset (frozen MiniLM, each distinct text embedded once, a
  trained head), all five folds;

with the out-of-fold log loss on the same rows of the class prior and of the uniform forecast
(and of LightGBM, when the ``lgbm`` model is installed), and wall times. A third table measures
inference on the real length mix: MiniLM forward over length-sorted token-budget batches against
padded batches (fixed rows in data order, padded to the longest), both in the same run.

    nice -n 10 .venv/bin/python benchmarks/bench_backbone_cpu.py
    nice -n 10 .venv/bin/python benchmarks/bench_backbone_cpu.py --runs minilm-budget:all
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import WORK, append_result, peak_rss_mib  # noqa: E402


def cv_run(table, model: str, params: dict, folds: list[int] | None, run_dir: Path) -> dict:
    from prefpred.models.base import build_model
    from prefpred.stages import run_cv

    t0 = time.perf_counter()
    res = run_cv(table, lambda: build_model(model, params), name=model, n_folds=5, seed=42,
                 run_dir=run_dir, only_folds=folds, resume=False)
    seconds = time.perf_counter() - t0
    row = res.scores.filter(res.scores["group"] == "ALL").row(0, named=True)
    return {"seconds": seconds, "log_loss": row["log_loss"], "accuracy": row["accuracy"],
            "rows": row["rows"], "result": res}


def run_config(spec: str, table, stamp: str) -> list[list]:
    from prefpred.models.backbone.config import load_backbone_config
    from prefpred.models.base import model_names

    preset, _, which = spec.partition(":")
    folds = None if which in ("", "all") else [int(k) for k in which.split(",")]
    params = {**load_backbone_config(preset), "progress": True}
    run_dir = WORK / "backbone_cpu" / stamp / preset
    backbone = cv_run(table, "backbone", params, folds, run_dir)
    fold_txt = "all 5" if folds is None else ",".join(map(str, folds))
    layers = f" layers {params['lora_layers']}" if params.get("lora_layers") else ""
    what = (f"{params.get('finetune', 'lora')}{layers}, {params.get('encode', 'pair')}, "
            f"max_length {params.get('max_length', 256)}, epochs {params.get('epochs', 1.0)}"
            + (f", max_steps {params['max_steps']}" if params.get("max_steps") else ""))
    rows = [[preset, what, "backbone", fold_txt, backbone["rows"], backbone["log_loss"],
             backbone["accuracy"], backbone["seconds"]]]
    print(f"{preset} folds {fold_txt}: log loss {backbone['log_loss']:.4f}, accuracy "
          f"{backbone['accuracy']:.4f}, {backbone['seconds']:.0f} s", flush=True)
    baselines = ["prior", "uniform"] + (["lgbm"] if "lgbm" in model_names() else [])
    for name in baselines:
        base = cv_run(table, name, {}, folds, run_dir)
        rows.append([preset, "", name, fold_txt, base["rows"], base["log_loss"],
                     base["accuracy"], base["seconds"]])
        print(f"  {name}: log loss {base['log_loss']:.4f}", flush=True)
    return rows


def inference_speed(table, pairs: int, max_length: int, infer_tokens: int, padded_rows: int,
                    repeats: int) -> list:
    """MiniLM forward on real pairs and their swaps: token-budget vs padded batches."""
    import torch

    from prefpred.models.backbone import BackboneModel
    from prefpred.models.backbone.batching import (
        Sequences,
        fixed_size_batches,
        padding_stats,
        token_budget_batches,
    )

    rng = np.random.default_rng(0)
    sample = table.take(rng.choice(len(table), size=pairs, replace=False))
    model = BackboneModel(backbone="minilm", finetune="frozen", max_length=max_length,
                          progress=False)
    model._build(artifact=None, trainable=False)
    both = sample.with_swapped()
    rendered = model._render(both)
    order = rng.permutation(len(both))
    seqs = Sequences.from_series(rendered.ids[order])
    lengths = seqs.lengths
    pad = int(model._tokenizer.pad_token_id)
    net = model._net.eval()

    def run(batches) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for rows in batches:
                ids, mask = seqs.pad(rows, pad)
                net(torch.from_numpy(ids), torch.from_numpy(mask),
                    torch.zeros(len(rows), 4))
        return time.perf_counter() - t0

    budget = token_budget_batches(lengths, infer_tokens, 256)
    padded = fixed_size_batches(len(lengths), padded_rows)
    run(budget[-2:])  # warm-up
    times = {"budget": [], "padded": []}
    for _ in range(repeats):  # interleaved, so load from other jobs hits both alike
        times["budget"].append(run(budget))
        times["padded"].append(run(padded))
    real = int(lengths.sum())
    tb, tp = statistics.median(times["budget"]), statistics.median(times["padded"])
    sb, sp = padding_stats(lengths, budget), padding_stats(lengths, padded)
    print(f"inference: token-budget {real / tb:,.0f} tok/s ({sb['padding_share']:.1%} padding) vs "
          f"padded {real / tp:,.0f} tok/s ({sp['padding_share']:.1%} padding): {tp / tb:.2f}x",
          flush=True)
    return [len(lengths), max_length, round(float(lengths.mean())), real / tb,
            sb["padding_share"], real / tp, sp["padding_share"], f"{tp / tb:.2f}x"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="*", default=["minilm-budget:all", "minilm-cpu:0"],
                    help="PRESET:FOLDS (FOLDS: all, or comma-separated fold numbers)")
    ap.add_argument("--inference-pairs", type=int, default=200, help="0: skip the speed table")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--infer-tokens", type=int, default=8192)
    ap.add_argument("--padded-rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    from prefpred.competitions import load_competition

    table = load_competition("shared-all").load_train()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    command = " ".join(["nice -n 10 python benchmarks/bench_backbone_cpu.py",
                        *(argv if argv is not None else sys.argv[1:])])
    if args.inference_pairs:
        row = inference_speed(table, args.inference_pairs, args.max_length, args.infer_tokens,
                              args.padded_rows, args.repeats)
        if not args.no_record:
            append_result(
                "Backbone inference on CPU: token-budget vs padded batches (MiniLM)",
                ["sequences", "max len", "mean tokens", "token-budget tok/s",
                 "token-budget padding", "padded tok/s", "padded padding", "speed-up"],
                [row], command,
                note=f"Real shared-all pairs and their swaps rendered by the backbone template; "
                     f"token-budget: sorted, {args.infer_tokens} tokens per batch; padded: "
                     f"{args.padded_rows} rows per batch in data order, padded to the longest. "
                     f"Median of {args.repeats} interleaved repeats, inference mode, 2 threads.")
    for spec in args.runs:
        rows = run_config(spec, table, stamp)
        if not args.no_record:
            append_result(
                "Backbone on CPU: shared-all out-of-fold log loss and wall time",
                ["preset", "configuration", "model", "folds", "rows scored", "log loss",
                 "accuracy", "wall s"], rows, command,
                note="5-fold grouped CV of shared-all (seed 42); the baselines are scored on the "
                     "same rows. Fresh run folder per run: no resumed folds, cold embedding "
                     f"cache. Peak RSS of the whole benchmark so far: {peak_rss_mib():.0f} MiB.")


if __name__ == "__main__":
    main()
