"""The GPU benchmark script runs end to end in its CPU smoke mode (tiny shapes, a few rows)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(name: str = "bench_backbone_gpu"):
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return bench


@pytest.mark.usefixtures("torch_one_thread")
def test_gpu_benchmark_smoke_runs_on_cpu():
    results = _bench().main(["--smoke", "--no-record", "--pairs", "8"])
    assert [r["model"] for r in results] == ["gemma2-9b (smoke)", "llama3-8b (smoke)"]
    for r in results:
        assert r["budget_tok_s"] > 0 and r["padded_tok_s"] > 0 and r["lora_steps_s"] > 0
        assert r["padding_budget"] <= r["padding_padded"]
        assert math.isfinite(r["projected_25k_min"]) and r["projected_25k_min"] > 0


@pytest.mark.usefixtures("torch_one_thread")
def test_gpu_inference_benchmark_smoke_runs_on_cpu():
    """The bundle-path inference benchmark: every precision x worker setting predicts."""
    rows = _bench("bench_inference_gpu").main(["--smoke", "--no-record", "--pairs", "8"])
    assert [(r["precision"], r["workers"]) for r in rows] == [
        ("fp32", 1), ("fp32", 2), ("fp16", 1), ("fp16", 2)]
    for r in rows:
        assert float(r["tokens/s"].replace(",", "")) > 0 and r["pairs"] == 8
        assert r["projected 25k pairs (swap avg)"].endswith(" h")


@pytest.mark.parametrize("name,published", [
    ("llama3-8b", 8.03e9),  # Meta-Llama-3-8B model card: 8.03B parameters (untied LM head)
    ("gemma2-9b", 9.24e9),  # gemma-2-9b model card: 9.24B parameters (tied embeddings)
    ("gemma2-2b", 2.61e9),  # gemma-2-2b model card: 2.61B parameters (tied embeddings)
])
def test_benchmark_shapes_have_the_published_sizes(name, published):
    """The benchmark's model shapes (built on the meta device: no memory) have the parameter
    counts their model cards publish, so its MFU divides by the right FLOPs."""
    from transformers import AutoModel

    bench = _bench()
    cfg = bench.build_config(_bench("bench_inference_gpu").SHAPES[name], smoke=False)
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    total = n + (0 if getattr(cfg, "tie_word_embeddings", False) else embed)
    assert abs(total / published - 1) < 0.005
    # one token costs 2 FLOPs per non-embedding parameter plus its attention to itself
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert bench.forward_flops(cfg, n - embed, [1]) == pytest.approx(
        2 * (n - embed) + 2 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim)
