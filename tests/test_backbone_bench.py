"""The GPU benchmark script runs end to end in its CPU smoke mode (tiny shapes, a few rows)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backbone_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_backbone_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_gpu_benchmark_smoke_runs_on_cpu():
    bench = _bench()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = bench.main(["--smoke", "--no-record", "--pairs", "8"])
    finally:
        torch.set_num_threads(before)
    assert [r["model"] for r in results] == ["gemma2-9b (smoke)", "llama3-8b (smoke)"]
    for r in results:
        assert r["budget_tok_s"] > 0 and r["padded_tok_s"] > 0 and r["lora_steps_s"] > 0
        assert r["padding_budget"] <= r["padding_padded"]
        assert math.isfinite(r["projected_25k_min"]) and r["projected_25k_min"] > 0


def test_flop_count_of_the_real_shapes():
    bench = _bench()
    cfg = bench.build_config(bench.SHAPES["llama3-8b"], smoke=False)
    # Llama-3-8B: about 7.0e9 parameters outside the embedding matrix
    per_layer = (4096 * 4096 * 2 + 4096 * 1024 * 2) + 3 * 4096 * 14336 + 2 * 4096
    n = 32 * per_layer + 4096
    flops = bench.forward_flops(cfg, n, [1000])
    assert abs(n / 1e9 - 6.98) < 0.05
    assert flops == 2 * n * 1000 + 2 * 32 * 4096 * 1000 ** 2
