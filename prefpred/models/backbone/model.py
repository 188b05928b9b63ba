"""``BackboneModel``: a three-class classifier over any Hugging Face backbone from a local path.

It follows the prefpred model protocol (``fit`` / ``predict_logits`` / ``get_params`` /
``set_work_dir``) and wires the small modules of this package together: rendering and truncation
(:mod:`.render`), batching (:mod:`.batching`), the network (:mod:`.network`), the training loop
(:mod:`.train`), inference (:mod:`.inference`) and artifacts (:mod:`.artifacts`). Its
hyper-parameters are the fields of :class:`~.config.BackboneConfig`.

Modes (``finetune``):

- ``lora`` (default) / ``qlora``: LoRA adapters (QLoRA: on 4/8-bit base weights, GPU only) and
  the head are trained; the base weights stay frozen.
- ``full``: every weight is trained.
- ``frozen``: the backbone is not trained; its pooled embeddings are computed once (cached by
  content, on disk beside the work dir) and only the head is trained on them. With
  ``encode='texts'`` each distinct prompt and response is embedded once, alone.

Symmetry: with ``swap_augment`` each micro-batch holds every pair and its swap (from
``table.swap()``), and with ``swap_average`` predictions average the log-probabilities of a pair
and of its swap through :func:`prefpred.models.base.swap_averaged_logits`, so P(A | x) equals
P(B | swap(x)).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError
from prefpred.io import json_digest
from prefpred.labels import N_CLASSES
from prefpred.models.backbone import artifacts, network, render
from prefpred.models.backbone.batching import (
    FeatureCollator,
    Sequences,
    TokenCollator,
    swap_paired_batches,
)
from prefpred.models.backbone.config import BackboneConfig, BackboneSource, resolve_backbone
from prefpred.models.backbone.inference import EmbeddingCache, run_batches
from prefpred.models.backbone.train import TrainData, TrainLog, train
from prefpred.models.base import average_with_swap, swap_averaged_logits
from prefpred.targets import Targets, encode


def _rows(index: np.ndarray, shown: int = 5) -> str:
    """Row numbers (1-based), the first few."""
    text = ", ".join(str(int(i) + 1) for i in index[:shown])
    return text + (", ..." if len(index) > shown else "")


def _digest(obj: Any, n: int = 20) -> str:
    return json_digest(obj)[:n]


class BackboneModel:
    """Fine-tune a Hugging Face encoder or decoder as a three-class (A, B, TIE) classifier.

    Keyword arguments are the fields of :class:`BackboneConfig` (``backbone``, ``finetune``,
    ``max_length``, ``lr``, ...); unknown ones are an error. ``progress=False`` hides progress bars.
    """

    def __init__(self, **params: Any):
        self.progress = bool(params.pop("progress", True))
        self.config = BackboneConfig.from_params(params)
        self.work_dir: Path | None = None
        self._net: network.PairClassifier | None = None
        self._tokenizer = None
        self._template: render.Template | None = None
        self._info: network.BackboneInfo | None = None
        self._source: BackboneSource | None = None
        self._device: torch.device | None = None
        self.weights_digest: str | None = None
        self.train_log_: TrainLog | None = None
        self._precision = "fp32"
        self._artifact: Path | None = None  # the folder it was loaded from
        self._replicas: list | None = None  # (network, device) on devices[1:]
        self._rendered: tuple | None = None  # (table fingerprint, max_length), rendered pairs

    # ----------------------------------------------------------------- protocol
    def get_params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def set_work_dir(self, path: str | Path | None) -> None:
        """Checkpoints, streamed predictions and the saved artifact go here."""
        self.work_dir = Path(path) if path is not None else None

    def fit(self, table: PreferenceTable) -> BackboneModel:
        cfg = self.config
        table.require_labels("training the backbone")
        init = Path(cfg.init_from) if cfg.init_from else None
        self._build(artifact=init, trainable=cfg.finetune != "frozen")
        if cfg.finetune == "frozen":
            self.train_log_ = self._fit_frozen(table)
        else:
            self.train_log_ = self._fit_network(table)
        self._net.eval()
        self.weights_digest = self._weights_digest()
        if self.work_dir is not None and cfg.save_artifact and self._is_main():
            self.save(self.work_dir / "artifact")
        return self

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        """Logits of ``table``'s rows: with ``swap_average``, the mean with the swapped pairs;
        over every device of ``devices``; within ``time_budget`` (see :mod:`.runtime`)."""
        if self._net is None:
            raise RuntimeError("BackboneModel is not fitted (call fit, or BackboneModel.load)")
        cfg = self.config
        frozen = cfg.finetune == "frozen"  # cached embeddings + head: one worker, no plan
        workers = [(self._net, self._device)] if frozen else self._workers()
        swap, max_length = cfg.swap_average, cfg.max_length
        if cfg.time_budget is not None and frozen:
            from prefpred.errors import notice

            notice("time_budget plans fine-tuned backbones only: a frozen one embeds each "
                   "text once (cached), so it is not planned")
        elif cfg.time_budget is not None:
            from prefpred.models.backbone.budget import fit_budget

            swap, max_length = fit_budget(self, table, workers)

        def one_side(t: PreferenceTable, on: list | None = None) -> np.ndarray:
            return self._predict_one_side(t, on or workers, max_length)

        if swap and cfg.split == "sides" and len(workers) == 2:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:  # the swapped copy on the second device
                direct = pool.submit(one_side, table, workers[:1])
                swapped = pool.submit(one_side, table.swap(), workers[1:])
                return average_with_swap(direct.result(), swapped.result())
        if swap:
            return swap_averaged_logits(one_side, table)
        return one_side(table)

    def _workers(self) -> list[tuple[torch.nn.Module, torch.device]]:
        """(network, device) per inference worker: this model's, plus a replica loaded from
        the artifact on every further device of ``devices``."""
        from prefpred.models.backbone.runtime import parse_devices

        devices = parse_devices(self.config.devices)
        if len(devices) <= 1:
            return [(self._net, self._device)]
        if self._replicas is None:
            if self._artifact is None:
                raise ConfigError("devices= needs a model loaded from its artifact "
                                  "(BackboneModel.load / prefpred predict)")
            overrides = {k: getattr(self.config, k) for k in artifacts.RUNTIME_KEYS
                         if k not in ("device", "devices", "time_budget")}
            self._replicas = [
                (m._net, m._device) for m in (
                    BackboneModel.load(self._artifact, **overrides, device=d, progress=False)
                    for d in devices[1:])]
        return [(self._net, self._device), *self._replicas]

    # ----------------------------------------------------------------- artifacts
    def save(self, path: str | Path) -> Path:
        """Adapter, head, tokenizer and config, with safetensors (see :mod:`.artifacts`)."""
        return artifacts.save_artifact(self, path)

    def save_state(self, folder: Path) -> None:
        """The artifact (adapter / head / tokenizer / config) in ``folder/artifact``."""
        self.save(Path(folder) / "artifact")

    @classmethod
    def from_saved(cls, folder: str | Path, **overrides: Any) -> BackboneModel:
        """A model saved by :func:`prefpred.models.base.save_model`, ready to predict."""
        return cls.load(Path(folder) / "artifact", **overrides)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> BackboneModel:
        """A saved artifact, ready to predict. ``overrides`` may change where and how it predicts
        (``device``, ``infer_tokens``, ``swap_average``, ``backbone`` for a moved base model)."""
        path = Path(path)
        info = artifacts.read_artifact_info(path)
        bad = sorted(set(overrides) - set(artifacts.RUNTIME_KEYS) - {"progress"})
        if bad:
            raise ConfigError(f"cannot change {bad} when loading an artifact (only "
                              f"{list(artifacts.RUNTIME_KEYS)})")
        # where to write (the embedding cache) is never taken from a file: the caller's or none
        params = {**info["params"], "cache_dir": None, **overrides, "init_from": None}
        from prefpred.models.backbone.runtime import parse_devices

        devices = parse_devices(params.get("devices"))
        if len(devices) > 1 or (devices and "device" not in overrides):
            params["device"] = devices[0]  # the first worker is this model
        model = cls(**params)
        model._artifact = path
        model._build(artifact=path, trainable=False)
        for p in model._net.parameters():
            p.requires_grad_(False)
        model.weights_digest = model._weights_digest()
        return model

    # ----------------------------------------------------------------- building
    def _is_main(self) -> bool:
        return network.distributed_state().is_main_process

    def _build(self, artifact: Path | None, trainable: bool) -> None:
        """Backbone, tokenizer, template and head; weights from ``artifact`` when given."""
        cfg = self.config
        saved = None
        if artifact is not None:
            saved = artifacts.read_artifact_info(artifact)
            artifacts.check_compatible(saved["params"], cfg.to_dict(), artifact,
                                       as_is=cfg.epochs == 0 and not cfg.max_steps)
        self._device = network.resolve_device(cfg.device)
        self._precision = self._choose_precision(trainable)
        if saved is not None and cfg.finetune == "full":
            source = BackboneSource(artifact / "backbone")
        else:
            source = resolve_backbone(cfg.backbone, cfg.gguf_file)
        self._source = source
        self._tokenizer = network.load_tokenizer(
            source, path=artifact / "tokenizer" if artifact is not None else None)
        torch.manual_seed(cfg.seed)
        backbone, info = network.load_backbone(source, cfg, self._device,
                                               None if trainable else self._precision)
        self._info = info
        if info.encoder and info.max_positions and (
                cfg.max_length > info.max_positions and cfg.encode == "pair"):
            raise ConfigError(f"max_length={cfg.max_length} exceeds the {info.max_positions} "
                              f"positions of {source.describe()}")
        self._template = render.build_template(self._tokenizer, encoder=info.encoder,
                                               use_chat_template=cfg.chat_template,
                                               instruction=cfg.instruction)
        width = info.hidden_size * (4 if cfg.encode == "texts" else 1)
        width += network.N_LENGTH_FEATURES if cfg.length_features else 0
        torch.manual_seed(cfg.seed)
        head = network.ClassifierHead(width, cfg.head, cfg.head_hidden, cfg.head_dropout)
        head.to(self._device)
        if artifact is not None and cfg.finetune in ("lora", "qlora"):
            net = network.PairClassifier(backbone, head, info.pooling)
            artifacts.load_weights(net, artifact, cfg.finetune, trainable)
            if trainable and cfg.gradient_checkpointing:
                network.enable_checkpointing(net.backbone)
        else:
            if trainable:
                backbone = network.add_adapters(backbone, cfg)
            net = network.PairClassifier(backbone, head, info.pooling)
            if artifact is not None:
                artifacts.load_weights(net, artifact, cfg.finetune, trainable)
        for p in net.head.parameters():
            p.requires_grad_(True)
        self._net = net.eval()

    def _weights_digest(self) -> str:
        """Identifies the trained weights (streamed predictions are keyed by it)."""
        net = self._net
        state = {f"head.{k}": v.detach().cpu() for k, v in net.head.state_dict().items()}
        if self.config.finetune == "full":
            state.update({k: v.detach().cpu() for k, v in net.backbone.state_dict().items()})
        elif self.config.finetune in ("lora", "qlora"):
            state.update({k: v.detach().cpu() for k, v in net.backbone.state_dict().items()
                          if "lora_" in k})
        base = "full" if self.config.finetune == "full" else self._source.describe()
        return _digest([base, network.state_digest(state)])

    def _bf16(self) -> bool:
        return network.use_bf16(self.config, self._device)

    def _choose_precision(self, trainable: bool) -> str:
        """Inference precision: after training, what training used (bf16 or fp32); for a
        loaded artifact, ``precision`` (``auto``: by the device, see :mod:`.runtime`; an
        explicit ``bf16=true/false`` decides when ``precision`` is auto)."""
        from prefpred.models.backbone.runtime import choose_precision

        cfg = self.config
        if trainable:
            return "bf16" if self._bf16() else "fp32"
        requested = cfg.precision
        if requested == "auto" and cfg.bf16 is not None and cfg.bf16 != "auto":
            requested = "bf16" if cfg.bf16 else "fp32"
        return choose_precision(requested, self._device.type)

    # ----------------------------------------------------------------- data
    def _render(self, table: PreferenceTable, max_length: int | None = None,
                keep: bool = False) -> render.RenderedPairs:
        """The rendered pairs. ``keep`` holds them for the next call on the same table and
        length (once), so that the time budget's warm-up and the prediction after it tokenize
        the file once."""
        cfg = self.config
        key = (table.fingerprint(), max_length or cfg.max_length)
        kept, self._rendered = self._rendered, None
        if kept is not None and kept[0] == key:
            return kept[1]
        out = render.render_pairs(table, self._tokenizer, self._template,
                                  max_length=max_length or cfg.max_length,
                                  prompt_share=cfg.prompt_share,
                                  min_response_tokens=cfg.min_response_tokens,
                                  truncation=cfg.truncation)
        if keep:
            self._rendered = (key, out)
        return out

    def _targets(self, table: PreferenceTable) -> np.ndarray:
        """Soft or hard targets, smoothed, two-class rows' tie marked -1 (:mod:`prefpred.targets`)."""
        cfg = self.config
        return encode(Targets.from_table(table, soft=cfg.soft_labels)
                      .smoothed(cfg.label_smoothing))

    def _run_key(self, table: PreferenceTable) -> str:
        cfg = self.config.to_dict()
        for key in ("infer_tokens", "infer_batch_rows", "checkpoint_every", "keep_checkpoints",
                    "save_artifact", "cache_dir", "swap_average", "precision", "load_in",
                    "devices", "split", "time_budget"):
            cfg.pop(key)
        return _digest([cfg, table.fingerprint(), self._source.describe()])

    def _param_groups(self, module: torch.nn.Module) -> list[dict[str, Any]]:
        cfg = self.config
        head = [p for n, p in module.named_parameters() if p.requires_grad and n.startswith("head.")]
        body = [p for n, p in module.named_parameters()
                if p.requires_grad and not n.startswith("head.")]
        return [{"params": head, "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
                {"params": body, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]

    def _checkpoint_dir(self) -> Path | None:
        return self.work_dir / "checkpoints" if self.work_dir is not None else None

    # ----------------------------------------------------------------- fine-tuning
    def _fit_network(self, table: PreferenceTable) -> TrainLog:
        cfg = self.config
        sides = [table, table.swap()] if cfg.swap_augment else [table]
        rendered = [self._render(t) for t in sides]
        seqs = [Sequences.from_series(r.ids) for r in rendered]
        extra = [network.length_features(r.full_lengths) for r in rendered]
        targets = [torch.as_tensor(self._targets(t), dtype=torch.float32) for t in sides]
        weights = torch.as_tensor(table.weights(), dtype=torch.float32)
        pair_lengths = np.max([s.lengths for s in seqs], axis=0)
        pad_id = int(self._tokenizer.pad_token_id)
        tokens = int(pair_lengths.sum()) * len(sides) * cfg.epochs
        if self.progress and self._device.type == "cpu" and tokens > 2_000_000 and (
                cfg.max_steps is None):
            import sys

            print(f"prefpred: fine-tuning on the CPU over {tokens / 1e6:.1f}M tokens: expect "
                  "hours (a few hundred tokens/s); --config minilm-budget runs in minutes, "
                  "--config minilm-cpu in about half an hour per fold", file=sys.stderr)

        def batches_for_epoch(epoch: int) -> list[np.ndarray]:
            return swap_paired_batches(pair_lengths, cfg.train_tokens, cfg.max_batch_pairs,
                                       seed=cfg.seed, epoch=epoch, copies=len(sides))

        collate = TokenCollator(targets, weights, seqs=seqs, pad_id=pad_id,
                                extra=extra if cfg.length_features else None)

        key = self._run_key(table)
        log = train(self._net, self._param_groups(self._net), TrainData(batches_for_epoch, collate),
                    epochs=cfg.epochs, max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
                    warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
                    bf16=self._bf16(), device=self._device,
                    checkpoint_dir=self._checkpoint_dir(), checkpoint_every=cfg.checkpoint_every,
                    keep_checkpoints=cfg.keep_checkpoints, run_key=key,
                    progress=self.progress, desc="fine-tune")
        if log.sharded:  # FSDP: rebuild an unsharded network from the gathered final weights
            from prefpred.models.backbone.train import latest_checkpoint, load_checkpoint_weights

            final = latest_checkpoint(self._checkpoint_dir(), key)
            init = Path(cfg.init_from) if cfg.init_from else None
            self._build(artifact=init, trainable=True)
            load_checkpoint_weights(final, self._net)
        return log

    def _predict_one_side(self, table: PreferenceTable, workers: list | None = None,
                          max_length: int | None = None) -> np.ndarray:
        cfg = self.config
        if cfg.finetune == "frozen":
            return self._head_logits(self._frozen_features(table))
        rendered = self._render(table, max_length)
        seqs = Sequences.from_series(rendered.ids)
        extra = network.length_features(rendered.full_lengths)
        pad_id = int(self._tokenizer.pad_token_id)

        def logits_on(net, device, precision: str):
            from prefpred.models.backbone.runtime import autocast

            def logits(rows: np.ndarray) -> np.ndarray:
                ids, mask = seqs.pad(rows, pad_id)
                net.head_fp32 = precision == "fp16"
                with torch.inference_mode(), autocast(precision, device.type):
                    out = net(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
                              extra[rows].to(device) if cfg.length_features else None)
                return out.float().cpu().numpy()
            return logits

        workers = workers or [(self._net, self._device)]
        stream = None
        if self.work_dir is not None:
            stream = (self.work_dir / "predictions" /
                      f"{self.weights_digest}_{table.fingerprint()[:20]}")
        meta = {"weights": self.weights_digest, "table": table.fingerprint(),
                "max_length": max_length or cfg.max_length, "infer_tokens": cfg.infer_tokens,
                "precision": self._precision}
        out = run_batches([logits_on(n, d, self._precision) for n, d in workers], seqs.lengths,
                          out_dim=N_CLASSES, max_tokens=cfg.infer_tokens,
                          max_rows=cfg.infer_batch_rows, stream_dir=stream, meta=meta,
                          progress=self.progress, desc="predict")
        bad = np.flatnonzero(~np.isfinite(out).all(1))
        if len(bad) and self._precision != "fp32":
            from prefpred.errors import notice

            notice(f"{len(bad)} row(s) gave non-finite logits in {self._precision} (rows "
                   f"{_rows(bad)} of {table.origin or 'the table'}): recomputed in fp32")
            net, device = workers[0]
            out[bad] = logits_on(net, device, "fp32")(bad)
            bad = bad[~np.isfinite(out[bad]).all(1)]
        if len(bad):
            from prefpred.errors import ModelError

            raise ModelError(f"the backbone gave non-finite logits for {len(bad)} row(s) (rows "
                             f"{_rows(bad)} of {table.origin or 'the table'}); nothing was "
                             "written")
        if stream is not None and self._is_main():
            shutil.rmtree(stream, ignore_errors=True)
        return out.astype(np.float64)

    # ----------------------------------------------------------------- frozen backbone
    def _cache(self) -> EmbeddingCache:
        cfg = self.config
        directory = (Path(cfg.cache_dir) if cfg.cache_dir else
                     self.work_dir.parent / "embedding_cache" if self.work_dir is not None
                     else None)
        key = _digest([self._source.name or str(self._source.path), self._source.gguf_file,
                       self._info.pooling, self._precision], 16)
        return EmbeddingCache(directory, key)

    def embed(self, ids) -> np.ndarray:
        """Pooled embeddings of token sequences (``List[Int32]`` series), via the cache."""
        cache = self._cache()
        digests = render.sequence_digests(ids)
        missing = cache.missing(digests)
        if missing:
            pad_id = int(self._tokenizer.pad_token_id)
            net, device = self._net, self._device
            from prefpred.models.backbone.runtime import autocast as autocast_for

            autocast = autocast_for(self._precision, device.type)
            todo = ids[missing]
            order = np.argsort(-todo.list.len().to_numpy(), kind="stable")
            # in slices, each added to the cache when done: an interrupt loses one slice at most
            for start in range(0, len(order), 4096):
                part = order[start:start + 4096]
                seqs = Sequences.from_series(todo[part])

                def pooled(rows: np.ndarray, seqs: Sequences = seqs) -> np.ndarray:
                    ids_, mask = seqs.pad(rows, pad_id)
                    with torch.inference_mode(), autocast:
                        out = net.pool(torch.from_numpy(ids_).to(device),
                                       torch.from_numpy(mask).to(device))
                    return out.float().cpu().numpy()

                values = run_batches(pooled, seqs.lengths, out_dim=self._info.hidden_size,
                                     max_tokens=self.config.infer_tokens,
                                     max_rows=self.config.infer_batch_rows,
                                     progress=self.progress,
                                     desc=f"embed {start + len(part)}/{len(order)}")
                cache.add([digests[missing[i]] for i in part], values, write=self._is_main())
        return cache.get(digests)

    def _frozen_features(self, table: PreferenceTable) -> np.ndarray:
        cfg = self.config
        if cfg.encode == "texts":
            texts = render.render_texts(table, self._tokenizer, self._template,
                                        max_length=cfg.max_length, prompt_share=cfg.prompt_share,
                                        min_response_tokens=cfg.min_response_tokens,
                                        truncation=cfg.truncation)
            emb = self.embed(texts.ids)
            p, a, b = (emb[texts.index[:, i]] for i in range(3))
            feats = [p, a, b, a - b]
            full = texts.full_lengths
        else:
            rendered = self._render(table)
            feats = [self.embed(rendered.ids)]
            full = rendered.full_lengths
        if cfg.length_features:
            feats.append(network.length_features(full).numpy())
        return np.concatenate(feats, axis=1).astype(np.float32)

    def _head_logits(self, features: np.ndarray) -> np.ndarray:
        head = self._net.head.eval()
        out = []
        with torch.inference_mode(), network.torch_threads(1 if self._device.type == "cpu"
                                                           else None):
            for start in range(0, len(features), 4096):
                x = torch.from_numpy(features[start:start + 4096]).to(self._device)
                out.append(head(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _fit_frozen(self, table: PreferenceTable) -> TrainLog:
        cfg = self.config
        sides = [table, table.swap()] if cfg.swap_augment else [table]
        feats = [torch.from_numpy(self._frozen_features(t)) for t in sides]
        targets = [torch.as_tensor(self._targets(t), dtype=torch.float32) for t in sides]
        weights = torch.as_tensor(table.weights(), dtype=torch.float32)
        ones = np.ones(len(table), dtype=np.int64)

        def batches_for_epoch(epoch: int) -> list[np.ndarray]:
            return swap_paired_batches(ones, len(sides) * cfg.max_batch_pairs,
                                       cfg.max_batch_pairs, seed=cfg.seed, epoch=epoch,
                                       copies=len(sides))

        collate = FeatureCollator(targets, weights, features=feats)

        head = self._net.head
        head.train()
        group = [{"params": list(head.parameters()), "lr": cfg.head_lr,
                  "weight_decay": cfg.weight_decay}]
        with network.torch_threads(1 if self._device.type == "cpu" else None):
            log = train(head, group, TrainData(batches_for_epoch, collate), epochs=cfg.epochs,
                        max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
                        warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
                        bf16=False, device=self._device, checkpoint_dir=self._checkpoint_dir(),
                        checkpoint_every=cfg.checkpoint_every,
                        keep_checkpoints=cfg.keep_checkpoints, run_key=self._run_key(table),
                        progress=self.progress, desc="train head")
        head.eval()
        return log
