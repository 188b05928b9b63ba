"""GPU throughput of the backbone on Gemma-2-9B- and Llama-3-8B-shaped models (random weights).

Weights do not change speed, so the models are built from configs directly on the GPU in bf16:
nothing is downloaded. The inputs are real: the Kaggle LMSYS sample rendered by the backbone's own
template and turn-aware truncation (with the bundled SmolLM2 tokenizer, a Llama-family BPE), each
pair and its swap, as swap averaging predicts them. Measured, per model:

- forward throughput (real tokens/s) with length-sorted token-budget batches, against padded
  batches (fixed row count in data order, padded to the longest row, the usual collator);
- model FLOPs utilisation (MFU) of the token-budget forward: FLOPs of the real tokens (2 x
  non-embedding parameters per token, plus causal attention) over the bf16 dense peak;
- LoRA training (r=16, all linear layers, gradient checkpointing, each pair with its swap in the
  micro-batch) in optimizer steps/s and tokens/s;
- the projected time to predict a Kaggle-size test set (25,000 pairs, swap averaged = 50,000
  sequences) on one GPU, from the measured token-budget throughput.

Goals: at least 45% MFU for inference, at least 1.5x over padded batching.

    python benchmarks/bench_backbone_gpu.py                  # one GPU; appends to RESULTS.md
    python benchmarks/bench_backbone_gpu.py --smoke          # tiny shapes on the CPU: checks
                                                             # the script end to end, no record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import DATA, append_result  # noqa: E402

SHAPES = {
    # google/gemma-2-9b
    "gemma2-9b": dict(arch="gemma2", vocab_size=256000, hidden_size=3584, intermediate_size=14336,
                      num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
                      head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                      max_position_embeddings=8192),
    # meta-llama/Meta-Llama-3-8B
    "llama3-8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      max_position_embeddings=8192),
}
#: bf16 dense peak TFLOP/s (no sparsity) by device name.
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
               "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0}
KAGGLE_TEST_PAIRS = 25_000


def peak_tflops(device_name: str) -> float:
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return float("nan")


def build_config(shape: dict, smoke: bool):
    from transformers import Gemma2Config, LlamaConfig

    from prefpred.testing import tiny_config

    shape = dict(shape)
    arch = shape.pop("arch")
    if smoke:
        cfg = tiny_config(arch, vocab_size=49152)  # the SmolLM2 tokenizer's ids fit
    elif arch == "gemma2":
        cfg = Gemma2Config(**shape)
    else:
        cfg = LlamaConfig(**shape, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    cfg.use_cache = False
    return cfg


def forward_flops(cfg, n_params_nonembed: int, lengths: np.ndarray) -> float:
    """Forward FLOPs of the real tokens: 2 x non-embedding parameters per token, plus causal
    attention (QK^T and AV, about 2 x layers x heads x head_dim x S^2 per sequence)."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(2.0 * n_params_nonembed * lengths.sum()
                 + 2.0 * cfg.num_hidden_layers * d_attn * (lengths ** 2).sum())


def real_length_mix(max_length: int, pairs: int, seed: int = 0):
    """Rendered sequences of real LMSYS pairs and their swaps (SmolLM2 tokenizer, backbone
    template, turn-aware truncation). Returns token id sequences and the full-set mean length."""
    from prefpred.data.formats import load_table
    from prefpred.models.backbone.batching import Sequences
    from prefpred.models.backbone.config import resolve_backbone
    from prefpred.models.backbone.network import load_tokenizer
    from prefpred.models.backbone.render import build_template, render_pairs

    table = load_table(DATA / "lmsys-kaggle-sample" / "train.csv")
    tokenizer = load_tokenizer(resolve_backbone("smollm2"))
    template = build_template(tokenizer, encoder=False,
                              instruction="Which response better answers the prompt: A, B, or "
                                          "is it a tie?")
    both = table.with_swapped()
    rendered = render_pairs(both, tokenizer, template, max_length=max_length)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(table), size=min(pairs, len(table)), replace=False)
    rows = np.concatenate([pick, pick + len(table)])  # each pair and its swap
    rows = rows[rng.permutation(len(rows))]  # data order for the padded baseline
    seqs = Sequences.from_series(rendered.ids[rows])
    return seqs, float(rendered.lengths.mean()), tokenizer.pad_token_id


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_forward(net, seqs, batches, pad_id: int, device, dtype) -> float:
    import torch

    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                enabled=dtype != torch.float32):
        for rows in batches:
            ids, mask = seqs.pad(rows, pad_id)
            net(torch.from_numpy(ids).to(device, non_blocking=True),
                torch.from_numpy(mask).to(device, non_blocking=True))
    sync(device)
    return time.perf_counter() - t0


def bench_model(name: str, args, seqs, mean_len: float, pad_id: int) -> dict:
    import torch
    from transformers import AutoModel

    from prefpred.models.backbone.batching import (
        fixed_size_batches,
        padding_stats,
        swap_paired_batches,
        token_budget_batches,
    )
    from prefpred.models.backbone.network import (
        ClassifierHead,
        PairClassifier,
        enable_checkpointing,
        gpu_attention,
    )
    from prefpred.models.backbone.train import soft_target_loss

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = build_config(SHAPES[name], args.smoke)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    attention = (args.attention or gpu_attention(cfg)) if device.type == "cuda" else None
    with torch.device(device):
        backbone = AutoModel.from_config(cfg, dtype=dtype, attn_implementation=attention)
    backbone.eval()
    n_params = sum(p.numel() for p in backbone.parameters())
    n_embed = backbone.get_input_embeddings().weight.numel()
    head = ClassifierHead(cfg.hidden_size, "linear").to(device)
    net = PairClassifier(backbone, head, "last").eval()
    build_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    lengths = seqs.lengths
    budget = token_budget_batches(lengths, args.infer_tokens, args.max_rows)
    padded_rows = max(1, args.infer_tokens // args.max_length)
    padded = fixed_size_batches(len(lengths), padded_rows)
    real_tokens = int(lengths.sum())
    time_forward(net, seqs, budget[:2], pad_id, device, dtype)  # warm-up: kernels, allocator
    t_budget = statistics.median(time_forward(net, seqs, budget, pad_id, device, dtype)
                                 for _ in range(args.repeats))
    t_padded = statistics.median(time_forward(net, seqs, padded, pad_id, device, dtype)
                                 for _ in range(args.repeats))
    flops = forward_flops(cfg, n_params - n_embed, lengths)
    peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name(0)
                                           if device.type == "cuda" else "cpu")
    mfu = flops / t_budget / (peak * 1e12) if peak == peak else float("nan")

    # LoRA training: each pair with its swap in the micro-batch, gradient checkpointing
    from peft import LoraConfig, get_peft_model

    enable_checkpointing(backbone)
    lora = get_peft_model(backbone, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                               target_modules="all-linear"))
    net = PairClassifier(lora, head, "last").train()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    half = len(lengths) // 2
    pair_len = np.maximum(lengths[:half], lengths[half:2 * half])
    steps = swap_paired_batches(pair_len, args.train_tokens, args.train_pairs, seed=0, epoch=0)
    steps = steps[:args.lora_steps + 1]
    targets = torch.eye(3, device=device)

    def train_step(rows: np.ndarray) -> int:
        both = np.concatenate([rows, rows + half])
        ids, mask = seqs.pad(both, pad_id)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = net(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            loss = soft_target_loss(logits, targets[torch.arange(len(both)) % 3],
                                    torch.ones(len(both), device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(mask.sum())

    train_step(steps[0])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    train_tokens = sum(train_step(rows) for rows in steps[1:])
    sync(device)
    t_train = time.perf_counter() - t0
    n_steps = len(steps) - 1
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")

    tok_s = real_tokens / t_budget
    projected = 2 * KAGGLE_TEST_PAIRS * mean_len / tok_s
    return {
        "model": name + (" (smoke)" if args.smoke else ""),
        "attention": backbone.config._attn_implementation,
        "params_b": n_params / 1e9,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "build_s": build_s,
        "sequences": len(lengths),
        "mean_tokens": float(lengths.mean()),
        "budget_tok_s": tok_s,
        "padded_tok_s": real_tokens / t_padded,
        "speedup": t_padded / t_budget,
        "padding_budget": padding_stats(lengths, budget)["padding_share"],
        "padding_padded": padding_stats(lengths, padded)["padding_share"],
        "mfu": mfu,
        "peak_tflops": peak,
        "lora_steps_s": n_steps / t_train,
        "lora_tok_s": train_tokens / t_train,
        "lora_step_tokens": train_tokens / max(n_steps, 1),
        "projected_25k_min": projected / 60,
        "peak_mem_gib": peak_mem,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gemma2-9b,llama3-8b")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--pairs", type=int, default=500, help="real pairs (x2 with their swaps)")
    ap.add_argument("--infer-tokens", type=int, default=65536, help="token budget per batch")
    ap.add_argument("--max-rows", type=int, default=256)
    ap.add_argument("--train-tokens", type=int, default=8192)
    ap.add_argument("--train-pairs", type=int, default=4)
    ap.add_argument("--lora-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--attention", default=None, help="attn_implementation (default: sdpa, "
                    "else flash_attention_2 if installed, else flex_attention)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="bf16 dense peak (default: from the device name; H100/H200 SXM 989.4)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on the CPU, a few rows: checks the script; never recorded")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.max_length = min(args.max_length, 256)
        args.pairs = min(args.pairs, 16)
        args.infer_tokens = min(args.infer_tokens, 2048)
        args.train_tokens = min(args.train_tokens, 1024)
        args.lora_steps = min(args.lora_steps, 2)
        args.repeats = 1
        args.peak_tflops = args.peak_tflops or 1.0  # a nominal CPU figure: MFU is meaningless
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU: run on a GPU machine, or pass --smoke to check the "
                             "script on the CPU")
    seqs, mean_len, pad_id = real_length_mix(args.max_length, args.pairs)
    results = []
    for name in args.models.split(","):
        r = bench_model(name, args, seqs, mean_len, pad_id)
        results.append(r)
        print(f"{r['model']} ({r['params_b']:.2f}B params on {r['device']}, "
              f"{r['attention']} attention): "
              f"token-budget {r['budget_tok_s']:,.0f} tok/s vs padded {r['padded_tok_s']:,.0f} "
              f"tok/s = {r['speedup']:.2f}x (goal >= 1.5x; padding {r['padding_budget']:.1%} vs "
              f"{r['padding_padded']:.1%}); MFU {r['mfu']:.1%} of {r['peak_tflops']} TFLOP/s "
              f"(goal >= 45%); LoRA {r['lora_steps_s']:.2f} steps/s, {r['lora_tok_s']:,.0f} "
              f"tok/s; 25k pairs x2 (swap) projected {r['projected_25k_min']:.1f} min; peak "
              f"{r['peak_mem_gib']:.1f} GiB", flush=True)
    if not args.no_record and not args.smoke:
        append_result(
            "Backbone on one GPU: forward throughput, MFU, token-budget vs padded, LoRA",
            ["model", "attention", "params (B)", "max len", "mean tokens", "token-budget tok/s",
             "padded tok/s", "speed-up (goal >= 1.5x)", "MFU (goal >= 45%)", "peak TFLOP/s used",
             "LoRA steps/s", "LoRA tok/s", "25k pairs x2 projected (min)", "peak GiB"],
            [[r["model"], r["attention"], round(r["params_b"], 2), args.max_length, round(r["mean_tokens"]),
              r["budget_tok_s"], r["padded_tok_s"], f"{r['speedup']:.2f}x", f"{r['mfu']:.1%}",
              r["peak_tflops"], r["lora_steps_s"], r["lora_tok_s"], r["projected_25k_min"],
              r["peak_mem_gib"]] for r in results],
            "python benchmarks/bench_backbone_gpu.py " + " ".join(argv or sys.argv[1:]),
            note=f"Random-weight models built from configs in bf16 (Llama: SDPA; Gemma-2, whose "
                 f"attention soft-capping SDPA cannot do: FlashAttention-2 if installed, else "
                 f"flex attention). Inputs: {args.pairs} "
                 f"real LMSYS pairs and their swaps rendered by the backbone template "
                 f"(SmolLM2 tokenizer), max length {args.max_length}. Token-budget batches: "
                 f"sorted, {args.infer_tokens} tokens; padded: {max(1, args.infer_tokens // args.max_length)} "
                 f"rows in data order, padded to the longest. MFU counts the real tokens' "
                 f"forward FLOPs (2 x non-embedding params + causal attention). LoRA: r=16, "
                 f"all-linear, gradient checkpointing, {args.train_tokens}-token micro-batches "
                 f"of pairs with their swaps. Projection: 50,000 sequences x the mean rendered "
                 f"length of the whole sample / token-budget tok/s (model load not included).",
        )
    return results


if __name__ == "__main__":
    main()
