"""Inference as a Kaggle notebook runs it: a saved LoRA artifact loaded by ``BackboneModel.load``
(the path ``prefpred predict`` and a bundle's ``predict.py`` take), predicting real LMSYS pairs
with swap averaging, per precision (fp16 autocast, bf16) and per worker count (one GPU, or one
worker per visible GPU with ``devices``).

The backbone has random weights of a real model's shape (weights do not change speed; nothing
is downloaded), the tokenizer is the bundled SmolLM2 one. Recorded per configuration: real
tokens/s (a pair and its swap both count), model FLOPs utilisation against the bf16 dense
peak, and the projected time to predict a Kaggle-size test file (25,000 pairs, swap
averaged) at that rate.

    python benchmarks/bench_inference_gpu.py                    # GPU(s); appends to RESULTS.md
    python benchmarks/bench_inference_gpu.py --shape gemma2-9b --load-in 8bit
    python benchmarks/bench_inference_gpu.py --smoke            # tiny model on the CPU, no record
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import DATA, append_result  # noqa: E402
from bench_backbone_gpu import SHAPES, build_config, forward_flops, peak_tflops  # noqa: E402

SHAPES = {**SHAPES,
          # google/gemma-2-2b
          "gemma2-2b": dict(arch="gemma2", vocab_size=256000, hidden_size=2304,
                            intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                            num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                            sliding_window=4096, max_position_embeddings=8192)}
KAGGLE_TEST_PAIRS = 25_000
COLUMNS = ["shape", "weights", "precision", "workers", "pairs", "tokens/s", "MFU",
           "projected 25k pairs (swap avg)"]


def build_backbone(shape: str, folder: Path, smoke: bool) -> Path:
    """A random-weight backbone of ``shape`` with the SmolLM2 tokenizer, saved to ``folder``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from prefpred.models.backbone.config import resolve_backbone

    src = resolve_backbone("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    # the shape, with the tokenizer's vocabulary (its ids must fit the embedding)
    cfg = build_config({**SHAPES[shape], "vocab_size": len(tokenizer)}, smoke)
    cfg.use_cache = False
    cfg.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModel.from_config(cfg, dtype=torch.float32 if smoke else torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="gemma2-2b", choices=sorted(SHAPES))
    ap.add_argument("--pairs", type=int, default=1000, help="test pairs predicted per setting")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--infer-tokens", type=int, default=32768)
    ap.add_argument("--load-in", choices=["8bit", "4bit"], default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from prefpred.data.formats import load_table
    from prefpred.models.backbone import BackboneModel
    from prefpred.models.backbone.runtime import parse_devices

    gpu = torch.cuda.is_available() and not args.smoke
    table = load_table(DATA / "lmsys-kaggle-sample" / "train.csv")
    rng = np.random.default_rng(0)
    test = table.take(np.sort(rng.choice(len(table), size=min(args.pairs, len(table)),
                                         replace=False)))
    max_length = 96 if args.smoke else args.max_length
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="prefpred-bench-infer-") as tmp_name:
        tmp = Path(tmp_name)
        folder = build_backbone(args.shape, tmp / "backbone", args.smoke)
        model = BackboneModel(backbone=str(folder), max_length=max_length, max_steps=1,
                              train_tokens=4 * max_length, checkpoint_every=0, progress=False,
                              gradient_checkpointing=gpu)
        model.fit(table.take(np.arange(16)))
        artifact = model.save(tmp / "artifact")
        cfg = model._net.backbone.base_model.model.config
        n_params = sum(p.numel() for p in model._net.backbone.parameters())
        n_embed = model._net.backbone.get_input_embeddings().weight.numel()
        del model
        if gpu:
            torch.cuda.empty_cache()
        precisions = ["fp16", "bf16"] if gpu else ["fp32", "fp16"]
        workers = (["cuda:0", "auto"] if gpu and torch.cuda.device_count() > 1 else
                   ["cuda:0"] if gpu else ["cpu", "cpu,cpu"])
        for precision in precisions:
            for devices in workers:
                loaded = BackboneModel.load(artifact, precision=precision, devices=devices,
                                            infer_tokens=args.infer_tokens, progress=False,
                                            **({"load_in": args.load_in} if args.load_in
                                               else {}))
                loaded.predict_logits(test.take(np.arange(min(32, len(test)))))  # warm-up
                lengths = loaded._render(test).lengths
                t0 = time.perf_counter()
                loaded.predict_logits(test)
                seconds = time.perf_counter() - t0
                n_workers = len(parse_devices(devices))
                tokens = 2 * int(lengths.sum())  # the pairs and their swaps
                rate = tokens / seconds
                flops = 2 * forward_flops(cfg, n_params - n_embed, lengths)
                peak = peak_tflops(torch.cuda.get_device_name(0)) if gpu else float("nan")
                mfu = flops / seconds / (peak * 1e12 * n_workers)
                projected = KAGGLE_TEST_PAIRS * 2 * float(lengths.mean()) / rate
                # weights: bf16 under bf16; fp32 under fp16 autocast and fp32; or quantized
                weights = args.load_in or ("bf16" if precision == "bf16" else "fp32")
                rows_out.append([args.shape + (" (smoke)" if args.smoke else ""), weights, precision, n_workers, len(test),
                                 f"{rate:,.0f}", f"{mfu:.1%}" if mfu == mfu else "-",
                                 f"{projected / 3600:.2f} h"])
                print(dict(zip(COLUMNS, rows_out[-1], strict=True)), flush=True)
                del loaded
                if gpu:
                    torch.cuda.empty_cache()
    if not args.smoke and not args.no_record:
        append_result("Inference on GPUs: precision and workers (LoRA artifact, swap averaged)",
                      COLUMNS, rows_out, "python benchmarks/bench_inference_gpu.py",
                      note="Random weights of the named shape, SmolLM2 tokenizer, real LMSYS "
                           f"pairs rendered at max_length {args.max_length}; timed after a "
                           "warm-up; MFU against the bf16 dense peak of all workers.")
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows_out]


if __name__ == "__main__":
    main()
