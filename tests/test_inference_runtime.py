"""Inference where competitors run it: precision by device, several workers, a time budget,
quantized loading, non-finite rows; on CPU with tiny models and recorded timings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from conftest import KAGGLE

from prefpred.errors import ConfigError, DependencyError, ModelError
from prefpred.models.backbone import BackboneModel
from prefpred.models.backbone.budget import measure, warmup_batches
from prefpred.models.backbone.inference import run_batches
from prefpred.models.backbone.runtime import (
    choose_precision,
    parse_devices,
    parse_duration,
    plan_budget,
)
from prefpred.testing import tiny_backbone

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize(("device", "capability", "expected"), [
    ("cuda", (9, 0), "bf16"),  # H100
    ("cuda", (8, 0), "bf16"),  # A100
    ("cuda", (8, 9), "bf16"),  # L4
    ("cuda", (7, 5), "fp16"),  # T4
    ("cuda", (7, 0), "fp16"),  # V100
    ("cuda", (6, 0), "fp16"),  # P100
    ("cpu", None, "fp32"),
])
def test_auto_precision_follows_the_device(device, capability, expected):
    assert choose_precision("auto", device, capability) == expected


def test_an_explicit_precision_wins_and_a_bad_one_is_refused():
    assert choose_precision("fp32", "cuda", (9, 0)) == "fp32"
    assert choose_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ConfigError, match="precision='fp8'"):
        choose_precision("fp8", "cuda", (9, 0))
    with pytest.raises(ConfigError, match="precision"):
        BackboneModel(precision="half")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tables():
    from prefpred.data.formats import load_table

    raw = pl.read_csv(KAGGLE, infer_schema=False)
    return raw, load_table(KAGGLE).take(np.arange(40)), load_table(KAGGLE).take(
        np.arange(40, 64))


def _artifact(tmp_path_factory, arch: str, tables) -> str:
    raw, train, _ = tables
    base = tmp_path_factory.mktemp(arch)
    model_dir = tiny_backbone(arch, base / arch, texts=raw["response_a"].head(100).to_list())
    model = BackboneModel(backbone=str(model_dir), max_length=96, train_tokens=1536,
                          max_steps=2, checkpoint_every=0, progress=False, infer_tokens=512)
    model.fit(train)
    return str(model.save(base / "artifact"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tables):
    return _artifact(tmp_path_factory, "llama", tables)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, tables):
    return _artifact(tmp_path_factory, "gemma2", tables)


def test_fp16_autocast_on_gemma2_is_finite_and_close_to_fp32(gemma, tables):
    test = tables[2]
    fp32 = BackboneModel.load(gemma, precision="fp32", progress=False).predict_logits(test)
    fp16 = BackboneModel.load(gemma, precision="fp16", progress=False).predict_logits(test)
    assert np.isfinite(fp16).all()
    assert not np.array_equal(fp16, fp32)  # it did compute in half precision...
    np.testing.assert_allclose(fp16, fp32, atol=2e-2)  # ...and stayed close


def test_non_finite_rows_are_recomputed_in_fp32_and_named(gemma, tables, monkeypatch, capsys):
    from prefpred.models.backbone import network

    test = tables[2]
    fp32 = BackboneModel.load(gemma, precision="fp32", progress=False,
                              swap_average=False).predict_logits(test)
    forward = network.PairClassifier.forward

    def overflowing(self, input_ids, attention_mask, extra=None):
        out = forward(self, input_ids, attention_mask, extra)
        if torch.is_autocast_enabled("cpu"):  # as fp16 overflow would
            out = out.clone()
            out[0] = float("inf")
        return out

    monkeypatch.setattr(network.PairClassifier, "forward", overflowing)
    model = BackboneModel.load(gemma, precision="fp16", progress=False, swap_average=False)
    fixed = model.predict_logits(test)
    err = capsys.readouterr().err
    assert "non-finite logits in fp16" in err and "recomputed in fp32" in err
    assert np.isfinite(fixed).all()
    bad = np.flatnonzero(~np.isclose(fixed, fp32, atol=2e-2).all(1))
    assert len(bad) == 0

    def always_nan(self, input_ids, attention_mask, extra=None):
        out = forward(self, input_ids, attention_mask, extra).clone()
        out[-1] = float("nan")
        return out

    monkeypatch.setattr(network.PairClassifier, "forward", always_nan)
    with pytest.raises(ModelError, match=r"non-finite logits for \d+ row\(s\) \(rows \d+"):
        BackboneModel.load(gemma, precision="fp16", progress=False).predict_logits(test)


def test_quantized_loading_on_cpu_is_a_clear_error(llama):
    with pytest.raises(DependencyError, match="load_in=8bit .* needs a CUDA GPU"):
        BackboneModel.load(llama, load_in="8bit", device="cpu")
    with pytest.raises(ConfigError, match="load_in"):
        BackboneModel(load_in="2bit")


# ------------------------------------------------------------------------------ workers
def test_workers_split_batches_and_merge_in_row_order():
    lengths = np.random.default_rng(0).integers(5, 200, size=300)
    seen: list[list[int]] = [[], []]

    def worker(w):
        def fn(rows):
            seen[w].extend(rows.tolist())
            return np.stack([rows, rows * 2, rows * 3], axis=1).astype(np.float32)
        return fn

    out = run_batches([worker(0), worker(1)], lengths, out_dim=3, max_tokens=800,
                      progress=False)
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(300))
    np.testing.assert_array_equal(out[:, 0], np.arange(300))
    np.testing.assert_array_equal(out[:, 2], np.arange(300) * 3)
    one = run_batches(worker(0), lengths, out_dim=3, max_tokens=800, progress=False)
    np.testing.assert_array_equal(one, out)


def test_two_cpu_workers_predict_what_one_does(llama, tables):
    test = tables[2]
    one = BackboneModel.load(llama, progress=False).predict_logits(test)
    two = BackboneModel.load(llama, devices="cpu,cpu", progress=False)
    assert len(two._workers()) == 2
    np.testing.assert_allclose(two.predict_logits(test), one, atol=1e-5)
    sides = BackboneModel.load(llama, devices="cpu,cpu", split="sides", progress=False)
    np.testing.assert_allclose(sides.predict_logits(test), one, atol=1e-5)


def test_device_lists_are_checked():
    assert parse_devices("cuda:0,cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices(None) == []
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert parse_devices("auto") == ([f"cuda:{i}" for i in range(gpus)] or ["cpu"])
    with pytest.raises(ConfigError, match="'gpu0' is not a device"):
        parse_devices("cuda:0,gpu0")


# ------------------------------------------------------------------------------ time budget
def test_durations():
    assert parse_duration("9h") == 9 * 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration("5400") == 5400
    for bad in ("", "9 hours", "-1h", "0s"):
        with pytest.raises(ConfigError, match="time budget"):
            parse_duration(bad)


# A recorded warm-up: 25,000 pairs of a Kaggle-like length mix at 2,000 tokens/s per worker.
LENGTHS = np.random.default_rng(1).integers(300, 1800, size=25_000)
TOKENS = int(LENGTHS.sum())


def test_a_file_that_fits_keeps_everything():
    plan = plan_budget(LENGTHS, tokens_per_s=2000, budget_s=9 * 3600, swap=True,
                       max_length=1800, workers=2)
    assert plan.swap_average and plan.max_length == 1800 and not plan.changes
    assert plan.projected_s == pytest.approx(TOKENS * 2 / 4000)


def test_swap_averaging_goes_first_then_max_length():
    full = TOKENS * 2 / 2000  # seconds with swap, one worker
    plan = plan_budget(LENGTHS, tokens_per_s=2000, budget_s=full * 0.8, swap=True,
                       max_length=1800)
    assert not plan.swap_average and plan.max_length == 1800
    assert "swap averaging dropped" in plan.changes[0]
    plan = plan_budget(LENGTHS, tokens_per_s=2000, budget_s=full * 0.3, swap=True,
                       max_length=1800)
    assert not plan.swap_average and plan.max_length < 1800
    available = full * 0.3 * 0.9

    def secs(length):
        return np.minimum(LENGTHS, length).sum() / 2000

    assert secs(plan.max_length) <= available < secs(plan.max_length + 1)  # the largest fit
    assert "max_length lowered from 1800" in plan.changes[-1]


def test_a_file_that_cannot_fit_is_refused_with_the_projection():
    with pytest.raises(ConfigError, match=r"does not fit the time budget of 10.0 min: "
                                          r"projected .* h"):
        plan_budget(LENGTHS, tokens_per_s=2000, budget_s=600, swap=False, max_length=1800)


def test_the_warm_up_is_timed_on_real_batches():
    lengths = np.array([100] * 10 + [10] * 10)
    first, timed = warmup_batches(lengths, max_tokens=200, max_rows=None)
    assert lengths[first].max() == 10  # the untimed start-up batch is the shortest
    ticks = iter([0.0, 1.0, 3.0])  # start, after the untimed batch, after the timed ones
    calls = []
    rate, spent = measure(calls.append, lengths, first, timed, clock=lambda: next(ticks))
    assert len(calls) == 1 + len(timed)
    assert rate == pytest.approx(sum(int(lengths[r].sum()) for r in timed) / 2.0)
    assert spent == 3.0


def test_a_budget_too_small_is_refused_before_predicting(llama, tables, monkeypatch):
    model = BackboneModel.load(llama, time_budget="0.001s", progress=False)
    with pytest.raises(ConfigError, match="does not fit the time budget"):
        model.predict_logits(tables[2])
    roomy = BackboneModel.load(llama, time_budget="9h", progress=False)
    plain = BackboneModel.load(llama, progress=False)
    from prefpred.models.backbone import render

    calls = []
    real = render.render_pairs
    monkeypatch.setattr(render, "render_pairs", lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_allclose(roomy.predict_logits(tables[2]),
                               plain.predict_logits(tables[2]), atol=1e-6)
    # the warm-up's rendering is the prediction's: each side tokenized once per model
    assert len(calls) == 4
