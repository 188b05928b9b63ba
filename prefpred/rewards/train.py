"""Train a scalar reward model on preference pairs that keeps ties (``prefpred train-reward``).

The network is a Hugging Face sequence classifier with one output (``num_labels=1``) on any
backbone the backbone package loads (the bundled MiniLM by default; local encoders and
decoders; LoRA, full fine-tuning or QLoRA). Each pair is scored side by side, both sides
rendered exactly as ``prefpred score-rewards`` renders them
(:func:`prefpred.rewards.scoring.side_texts` and :func:`~prefpred.rewards.scoring.encode_for_reward`),
and the reward difference goes through a pairwise likelihood (:mod:`prefpred.rewards.losses`:
Bradley-Terry without ties, or Davidson / Rao-Kupper with their tie parameter learned jointly).
The backbone's pieces are reused: its config checks, token-budget batches and collator, LoRA
set-up, precision and training loop (checkpoints and resume included).

The output folder is a plain Hugging Face model (LoRA merged into the weights)::

    DIR/config.json, model.safetensors     AutoModelForSequenceClassification, num_labels = 1
    DIR/tokenizer files                    with a chat template (the plain one for encoders)
    DIR/prefpred_reward.json               loss, tie parameter, max_length, training summary
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.labels import CLASSES, TIE
from prefpred.models.backbone import network
from prefpred.models.backbone.config import BackboneConfig, BackboneSource, resolve_backbone
from prefpred.rewards.losses import (
    TIE_PARAMETER,
    check_loss,
    raw_tie,
    reward_logits,
    tie_from_raw,
    tie_rate,
    tie_value,
    training_targets,
)

REWARD_INFO = "prefpred_reward.json"
INFO_KIND = "prefpred-reward-model"
INFO_FORMAT = 1
#: Keys shared with :class:`BackboneConfig` (checked by it: one set of rules for both).
SHARED_KEYS = ("backbone", "gguf_file", "finetune", "quant_bits", "lora_r", "lora_alpha",
               "lora_dropout", "lora_target", "lora_layers", "gradient_checkpointing", "bf16",
               "max_length", "epochs", "max_steps", "train_tokens", "max_batch_pairs",
               "grad_accum", "lr", "head_lr", "weight_decay", "warmup_ratio", "max_grad_norm",
               "seed", "device", "checkpoint_every", "keep_checkpoints", "extra")


@dataclass
class RewardConfig:
    """Hyper-parameters of ``prefpred train-reward`` (a TOML file of these keys, flat or under
    ``[params]``; ``--param key=value`` overrides). Shared keys mean what they mean for the
    backbone (see :class:`~prefpred.models.backbone.config.BackboneConfig`)."""

    loss: str = "davidson"  # bt (ties dropped) | davidson | rao-kupper (tie parameter learned)
    backbone: str = "minilm"
    gguf_file: str | None = None
    finetune: str = "lora"  # lora | full | qlora
    quant_bits: int = 4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: str | list[str] = "all-linear"
    lora_layers: list[int] | None = None
    gradient_checkpointing: bool = False
    bf16: str | bool = "auto"
    max_length: int = 256  # tokens per rendered (prompt, response), truncated from the left
    epochs: float = 1.0
    max_steps: int | None = None
    train_tokens: int = 8192  # token budget of a micro-batch (both sides of each pair count)
    max_batch_pairs: int = 16
    grad_accum: int = 1
    lr: float = 1e-4  # backbone (LoRA adapters, or every weight with finetune=full)
    head_lr: float = 1e-3  # the reward head (and an encoder's pooler)
    tie_lr: float = 1e-2  # the tie parameter
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    soft_labels: bool = True  # train on soft_label where the table has one
    tie_rate: float | None = None  # initial P(TIE) at equal rewards (default: the data's)
    seed: int = 42
    device: str = "auto"
    checkpoint_every: int = 100  # with --work-dir: optimizer steps between checkpoints
    keep_checkpoints: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_loss(self.loss)
        if self.finetune not in ("lora", "full", "qlora"):
            raise ConfigError(f"train-reward parameter finetune={self.finetune!r}: choose lora, "
                              "full or qlora")
        if self.tie_lr <= 0:
            raise ConfigError("train-reward parameter tie_lr must be positive")
        if self.tie_rate is not None and not 0.0 < self.tie_rate < 1.0:
            raise ConfigError(f"train-reward parameter tie_rate={self.tie_rate!r}: must be in "
                              "(0, 1)")
        if self.max_length < 8:
            raise ConfigError("train-reward parameter max_length must be at least 8")
        self.backbone_config()

    def backbone_config(self) -> BackboneConfig:
        """The shared keys as a backbone config (what the network helpers take)."""
        try:
            return BackboneConfig(**{k: getattr(self, k) for k in SHARED_KEYS})
        except ConfigError as err:
            raise ConfigError(str(err).replace("backbone parameter", "train-reward parameter")
                              ) from None

    @classmethod
    def from_params(cls, params: dict[str, Any], file: str | Path | None = None
                    ) -> RewardConfig:
        from prefpred.schema import dataclass_from_params

        return dataclass_from_params(cls, params, "train-reward parameter", file)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- the network
class RewardPairs(nn.Module):
    """A one-output sequence classifier scoring both sides of each pair, and the tie parameter.

    ``forward(input_ids, attention_mask, two_class)`` takes the A sides of ``n`` pairs followed
    by their B sides and returns (n, 3) logits of the loss (see :func:`reward_logits`)."""

    def __init__(self, model: nn.Module, loss: str, tie_init: float | None):
        super().__init__()
        self.model = model
        self.loss = loss
        self.tie = (nn.Parameter(torch.tensor(raw_tie(loss, tie_init), dtype=torch.float32))
                    if loss != "bt" else None)

    def rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                two_class: torch.Tensor | None = None) -> torch.Tensor:
        r = self.rewards(input_ids, attention_mask)
        n = r.shape[0] // 2
        return reward_logits(r[:n] - r[n:], self.loss, self.tie, two_class)

    def tie_parameter(self) -> float | None:
        return None if self.tie is None else float(tie_from_raw(self.loss, self.tie.detach()))


def _is_head(name: str, prefix: str) -> bool:
    """The reward head (outside the base model) and an encoder's pooler are trained in full."""
    return not name.startswith(prefix + ".") or ".pooler." in name


def load_classifier(source: BackboneSource, cfg: RewardConfig, device: torch.device, tokenizer,
                    *, quantized: bool | None = None, dtype: torch.dtype | None = None):
    """A frozen one-output sequence classifier on the backbone (a new head), and whether the
    backbone is an encoder."""
    from transformers import AutoModelForSequenceClassification

    from prefpred.hf import from_pretrained

    bcfg = cfg.backbone_config()
    kwargs, hf_config = network.backbone_config(cfg, source)
    encoder = network.is_encoder(hf_config)
    quantized = cfg.finetune == "qlora" if quantized is None else quantized
    if dtype is None:
        half = network.use_bf16(bcfg, device) and cfg.finetune in ("lora", "qlora")
        dtype = torch.bfloat16 if half else torch.float32
    if device.type == "cuda" and "attn_implementation" not in kwargs:
        kwargs["attn_implementation"] = network.gpu_attention(hf_config)
    if quantized:
        kwargs["quantization_config"] = network._quantization_config(bcfg, device)
        kwargs["device_map"] = {"": device.index or 0}
    with network.quiet_transformers():
        model = from_pretrained(AutoModelForSequenceClassification, source.path,
                                what="backbone", dtype=dtype, num_labels=1, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.problem_type = "regression"
    model.config.id2label, model.config.label2id = {0: "reward"}, {"reward": 0}
    if not quantized:
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, encoder


def reward_tokenizer(source: BackboneSource):
    """The backbone's tokenizer (pad token set) with a chat template: its own, else the plain
    rendering as one (the same text; a saved reward model then renders it with plain
    transformers)."""
    from prefpred.rewards.scoring import PLAIN_CHAT_TEMPLATE

    tokenizer = network.load_tokenizer(source)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


def build_network(cfg: RewardConfig, device: torch.device, source: BackboneSource, tokenizer,
                  tie_init: float | None) -> RewardPairs:
    """The network: LoRA / QLoRA adapters or every weight trainable, the head always."""
    torch.manual_seed(cfg.seed)
    model, encoder = load_classifier(source, cfg, device, tokenizer)
    positions = getattr(model.config, "max_position_embeddings", None)
    if encoder and positions and cfg.max_length > positions:
        raise ConfigError(f"max_length={cfg.max_length} exceeds the {positions} positions of "
                          f"{source.describe()}")
    prefix = model.base_model_prefix
    if cfg.finetune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        setattr(model, prefix, network.add_adapters(getattr(model, prefix),
                                                    cfg.backbone_config()))
    for name, p in model.named_parameters():
        if _is_head(name, prefix) and p.is_floating_point():
            p.data = p.data.float()  # fp32 master weights under bf16 autocast
            p.requires_grad_(True)
    return RewardPairs(model, cfg.loss, tie_init)


def param_groups(net: RewardPairs, cfg: RewardConfig) -> list[dict[str, Any]]:
    prefix = net.model.base_model_prefix
    head, body = [], []
    for name, p in net.model.named_parameters():
        if p.requires_grad:
            (head if _is_head(name, prefix) else body).append(p)
    groups = [{"params": head, "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
              {"params": body, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if net.tie is not None:
        groups.append({"params": [net.tie], "lr": cfg.tie_lr, "weight_decay": 0.0})
    return groups


# --------------------------------------------------------------------------- data
@dataclass
class PairData:
    """Both sides of the training pairs as token sequences, with targets and weights."""

    sides: list  # [Sequences A, Sequences B]
    targets: np.ndarray  # (k, 3)
    weights: np.ndarray  # (k,)
    two_class: np.ndarray  # (k,) bool
    kept: np.ndarray  # rows of the table used
    tie_share: float  # weighted share of TIE among rows with a tie outcome


def encode_sides(table: PreferenceTable, tokenizer, max_length: int) -> list:
    """The A and B sides of every pair, rendered and encoded as ``score-rewards`` does."""
    from prefpred.models.backbone.batching import Sequences
    from prefpred.rewards.scoring import encode_for_reward, side_texts

    out = []
    for column in ("response_a", "response_b"):
        ids = encode_for_reward(tokenizer, side_texts(tokenizer, table, column), max_length)
        out.append(Sequences.from_series(pl.Series(ids, dtype=pl.List(pl.Int64))))
    return out


def prepare_pairs(table: PreferenceTable, tokenizer, cfg: RewardConfig) -> PairData:
    y = table.require_labels("training a reward model")
    soft = table.soft_labels() if cfg.soft_labels else None
    kept, targets, two_class = training_targets(y, soft, table.tie_allowed(), cfg.loss)
    if len(kept) < 2:
        raise DataError(f"{len(kept)} pair(s) to train on with the {cfg.loss} loss",
                        file=table.origin, column="label")
    present = np.unique(targets.argmax(1))  # the labels kept (argmax of soft ones)
    if len(present) < 2:
        raise DataError(f"every label kept for the {cfg.loss} loss is {CLASSES[present[0]]}: "
                        "a reward model needs at least two classes", file=table.origin,
                        column="label")
    sub = table.take(kept)
    weights = sub.weights()
    open_rows = ~two_class
    mass = float((weights * targets[:, TIE])[open_rows].sum())
    total = float(weights[open_rows].sum())
    share = mass / total if total > 0 else 0.0
    if cfg.loss != "bt" and mass <= 0:
        raise DataError(f"no ties among the labels: the {cfg.loss} loss cannot learn how often "
                        "ties happen", file=table.origin, column="label",
                        fix="train with --loss bt, or on data with ties")
    return PairData(encode_sides(sub, tokenizer, cfg.max_length), targets, weights, two_class,
                    kept, share)


# --------------------------------------------------------------------------- training
@dataclass
class RewardTraining:
    """A trained reward network and what to save beside it."""

    net: RewardPairs
    tokenizer: Any
    source: BackboneSource
    config: RewardConfig
    summary: dict[str, Any]


def _run_key(cfg: RewardConfig, table: PreferenceTable, source: BackboneSource) -> str:
    from prefpred.io import json_digest

    conf = {k: v for k, v in cfg.to_dict().items()
            if k not in ("checkpoint_every", "keep_checkpoints", "device")}
    return json_digest([conf, table.fingerprint(), source.describe(), "reward"])[:20]


def fit_reward_model(table: PreferenceTable, cfg: RewardConfig, *,
                     work_dir: str | Path | None = None, progress: bool = True
                     ) -> RewardTraining:
    """Train a reward model on ``table`` (checkpoints, and resume, in ``work_dir/checkpoints``
    when a work folder is given)."""
    from prefpred.models.backbone.batching import TokenCollator, swap_paired_batches
    from prefpred.models.backbone.train import TrainData, train

    started = time.perf_counter()
    device = network.resolve_device(cfg.device)
    source = resolve_backbone(cfg.backbone, cfg.gguf_file)
    tokenizer = reward_tokenizer(source)
    data = prepare_pairs(table, tokenizer, cfg)
    tie_init = None
    if cfg.loss != "bt":
        tie_init = tie_value(cfg.loss, cfg.tie_rate if cfg.tie_rate is not None
                             else float(np.clip(data.tie_share, 0.02, 0.9)))
    net = build_network(cfg, device, source, tokenizer, tie_init)
    targets = torch.as_tensor(data.targets, dtype=torch.float32)
    weights = torch.as_tensor(data.weights, dtype=torch.float32)
    two_class = torch.as_tensor(data.two_class)
    seq_a, seq_b = data.sides
    pair_lengths = np.maximum(seq_a.lengths, seq_b.lengths)
    collator = TokenCollator([targets], weights, seqs=[seq_a, seq_b],
                             pad_id=int(tokenizer.pad_token_id))

    def collate(rows: np.ndarray) -> dict[str, Any]:
        batch = collator(rows)
        batch["inputs"]["two_class"] = two_class[rows]
        return batch

    def batches_for_epoch(epoch: int) -> list[np.ndarray]:
        return swap_paired_batches(pair_lengths, cfg.train_tokens, cfg.max_batch_pairs,
                                   seed=cfg.seed, epoch=epoch, copies=2)

    bcfg = cfg.backbone_config()
    log = train(net, param_groups(net, cfg), TrainData(batches_for_epoch, collate),
                epochs=cfg.epochs, max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
                warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
                bf16=network.use_bf16(bcfg, device), device=device,
                checkpoint_dir=Path(work_dir) / "checkpoints" if work_dir is not None else None,
                checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
                run_key=_run_key(cfg, table, source), progress=progress,
                desc=f"train-reward ({cfg.loss})")
    if log.sharded:
        raise ConfigError("train-reward does not support FSDP; launch with DDP (the default "
                          "accelerate config) or on one device")
    net.eval()
    summary = {
        "rows": len(table), "pairs_trained": int(len(data.kept)),
        "ties_dropped": int(len(table) - len(data.kept)),
        "two_class_pairs": int(data.two_class.sum()) if cfg.loss != "bt" else int(len(data.kept)),
        "tie_share": data.tie_share, "steps": log.total_steps, "resumed_from": log.resumed_from,
        "first_loss": log.losses[0] if log.losses else None, "final_loss": log.final_loss,
        "seconds": round(time.perf_counter() - started, 1), "device": str(device),
        "initial_tie_parameter": tie_init, "table": table.fingerprint(),
    }
    return RewardTraining(net, tokenizer, source, cfg, summary)


# --------------------------------------------------------------------------- saving
def _merged_classifier(result: RewardTraining) -> nn.Module:
    """The trained classifier with LoRA merged into its weights (QLoRA: into a copy of the base
    weights loaded unquantized, in bf16)."""
    cfg, model = result.config, result.net.model
    prefix = model.base_model_prefix
    if cfg.finetune == "full":
        return model
    if cfg.finetune == "qlora":
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        fresh, _ = load_classifier(result.source, cfg, torch.device("cpu"), result.tokenizer,
                                   quantized=False, dtype=torch.bfloat16)
        setattr(fresh, prefix, network.add_adapters(
            getattr(fresh, prefix), dataclasses.replace(cfg, finetune="lora",
                                                        gradient_checkpointing=False
                                                        ).backbone_config()))
        params = dict(fresh.named_parameters())
        missing = [n for n in trained if n not in params]
        if missing:
            raise ConfigError(f"cannot merge the QLoRA adapters (no {missing[0]} unquantized)")
        with torch.no_grad():
            for name, value in trained.items():
                params[name].copy_(value.to(params[name].dtype))
        model = fresh
    setattr(model, prefix, getattr(model, prefix).merge_and_unload())
    return model


def reward_info(result: RewardTraining) -> dict[str, Any]:
    cfg = result.config
    info: dict[str, Any] = {
        "kind": INFO_KIND, "format": INFO_FORMAT, "loss": cfg.loss,
        "max_length": cfg.max_length, "truncation": "left",
        "render": "prefpred.rewards.scoring.side_texts (the tokenizer's chat template; "
                  "no special tokens added)",
        "backbone": result.source.describe(), "finetune": cfg.finetune,
        "config": cfg.to_dict(), "training": result.summary,
    }
    tie = result.net.tie_parameter()
    if tie is not None:
        name = TIE_PARAMETER[cfg.loss]
        info["tie_model"] = cfg.loss
        info["tie_parameter"] = {"name": name, "value": tie}
        info["tie_rate_at_equal_rewards"] = tie_rate(cfg.loss, tie)
        info["params"] = {"scale": 1.0, "position_bias": 0.0, name: tie}
    return info


def save_reward_model(result: RewardTraining, out: str | Path) -> Path:
    """Write the plain Hugging Face folder (atomically: all of it or nothing)."""
    from prefpred.io import atomic_dir

    model = _merged_classifier(result)
    cfg = result.config
    if cfg.finetune != "full" and network.use_bf16(cfg.backbone_config(),
                                                   torch.device(result.summary["device"])):
        model.to(torch.bfloat16)  # one dtype: the base weights' (the head was trained in fp32)
    model.config.pad_token_id = result.tokenizer.pad_token_id
    tokenizer = result.tokenizer
    tokenizer.truncation_side = "left"
    tokenizer.model_max_length = result.config.max_length
    out = Path(out)
    with atomic_dir(out) as tmp, network.quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / REWARD_INFO).write_text(json.dumps(reward_info(result), indent=2, sort_keys=True,
                                                  default=str) + "\n", encoding="utf-8")
    return out


def train_reward_model(table: PreferenceTable, cfg: RewardConfig, out: str | Path, *,
                       work_dir: str | Path | None = None, progress: bool = True
                       ) -> dict[str, Any]:
    """Train and save; returns the saved ``prefpred_reward.json`` contents."""
    result = fit_reward_model(table, cfg, work_dir=work_dir, progress=progress)
    if network.distributed_state().is_main_process:
        save_reward_model(result, out)
    return reward_info(result)


def read_reward_info(folder: str | Path) -> dict[str, Any]:
    """``prefpred_reward.json`` of a folder written by ``prefpred train-reward`` (checked)."""
    from prefpred.io import read_json_header

    info = read_json_header(folder, REWARD_INFO, INFO_KIND, INFO_FORMAT,
                            "reward model trained by prefpred train-reward")
    loss = info.get("loss")
    file = Path(folder) / REWARD_INFO
    if loss not in TIE_PARAMETER and loss != "bt":
        raise DataError(f"unknown loss {loss!r}", file=file, column="loss")
    if loss in TIE_PARAMETER:
        tie = info.get("tie_parameter")
        value = tie.get("value") if isinstance(tie, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(
                value) or abs(value) > 1e6 or (
                loss == "rao-kupper" and value <= 0):
            raise DataError("tie_parameter is not a valid number", file=file,
                            column="tie_parameter")
    return info
