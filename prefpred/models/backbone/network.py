"""The network: a Hugging Face backbone, pooling, and a three-class head; LoRA / QLoRA set-up.

Encoders (BERT, DeBERTa, MiniLM, ...) pool by mean or ``[CLS]``; decoders (Llama, Gemma-2,
Qwen2, Mistral, ...) by their last real token (sequences are right-padded, so that is position
``length - 1``). The head sees the pooled vector (and, optionally, a few length features) and
emits logits in class order (A, B, TIE).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prefpred.errors import ConfigError, DependencyError
from prefpred.hf import check_model_folder, from_pretrained
from prefpred.labels import N_CLASSES
from prefpred.models.backbone.config import BackboneConfig, BackboneSource

N_LENGTH_FEATURES = 4


def length_features(full_lengths) -> torch.Tensor:
    """log token counts of prompt, A, B and log(A) - log(B), scaled to about unit range."""
    import numpy as np

    logs = np.log1p(np.asarray(full_lengths, dtype=np.float64)) / 5.0
    return torch.as_tensor(np.concatenate([logs, logs[:, 1:2] - logs[:, 2:3]], axis=1),
                           dtype=torch.float32)


class ClassifierHead(nn.Module):
    """``linear``: one linear layer. ``mlp``: dropout, linear, GELU, dropout, linear."""

    def __init__(self, in_features: int, kind: str = "mlp", hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        if kind == "linear":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, N_CLASSES))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden),
                                     nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pooled float32 vector per row of right-padded hidden states."""
    hidden = hidden.float()
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = attention_mask.sum(1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class PairClassifier(nn.Module):
    """Backbone + pooling + head: ``forward(input_ids, attention_mask, extra)`` -> (batch, 3)."""

    def __init__(self, backbone: nn.Module, head: ClassifierHead, pooling: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooling = pooling
        self.head_fp32 = False  # inference in fp16: the head runs outside autocast, in fp32

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool_hidden(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.pool(input_ids, attention_mask)
        if extra is not None:
            pooled = torch.cat([pooled, extra.to(pooled.dtype)], dim=1)
        if self.head_fp32:
            with torch.autocast(pooled.device.type, enabled=False):
                return self.head(pooled.float())
        return self.head(pooled)


@dataclass
class BackboneInfo:
    """What the code needs to know about a loaded backbone."""

    encoder: bool
    hidden_size: int
    pooling: str
    max_positions: int | None
    model_type: str


def is_encoder(config) -> bool:
    """Masked-LM architectures (BERT, DeBERTa, RoBERTa, ...) are encoders; the rest decoders."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (a small head trains fastest on one, and shared cores
    make many threads wait on each other); restored afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def distributed_state():
    """accelerate's process state: one process, or one of many under ``accelerate launch`` /
    ``torchrun`` (GPUs with NCCL; CPUs with gloo, which lets the distributed code run here)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return distributed_state().device
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available")
    return torch.device(name)


def use_bf16(cfg: BackboneConfig, device: torch.device) -> bool:
    if cfg.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(cfg.bf16)


def load_tokenizer(source: BackboneSource, path=None):
    """The tokenizer of a backbone (or of an artifact folder), with a pad token set."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if path is None:
        path = source.path
        if source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
    check_model_folder(path, ("tokenizer",), gguf_file=kwargs.get("gguf_file"),
                       what="tokenizer")
    with quiet_transformers():
        tok = from_pretrained(AutoTokenizer, path, what="tokenizer", **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token or tok.bos_token
    if tok.pad_token is None:
        raise ConfigError(f"{source.describe()}: the tokenizer has no pad, eos, unk or bos token")
    return tok


def _quantization_config(cfg: BackboneConfig, device: torch.device, bits: int | None = None,
                         compute: str = "bf16"):
    """bitsandbytes settings: QLoRA's base weights, or (``bits``) weights loaded in 8 or 4 bits
    for inference (``load_in``)."""
    what = (f"load_in={bits}bit (quantized inference)" if bits else
            f"finetune=qlora ({cfg.quant_bits}-bit base weights)")
    if device.type != "cuda":
        raise DependencyError(f"{what} needs a CUDA GPU; on the CPU leave it out")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DependencyError(f"{what} needs bitsandbytes: pip install 'prefpred[gpu]'")
    from transformers import BitsAndBytesConfig

    if (bits or cfg.quant_bits) == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float16 if compute == "fp16"
                              else torch.bfloat16)


def gpu_attention(hf_config) -> str | None:
    """The fastest attention this architecture supports on a GPU without extra downloads: SDPA
    (flash kernels), else FlashAttention-2 when installed, else flex attention (Gemma-2, whose
    soft-capping SDPA cannot do). ``None`` leaves the transformers default."""
    from transformers import AutoModel

    try:
        cls = AutoModel._model_mapping[type(hf_config)]
    except KeyError:
        return None
    if getattr(cls, "_supports_sdpa", False):
        return "sdpa"
    if getattr(cls, "_supports_flash_attn", False) and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    if getattr(cls, "_supports_flex_attn", False):
        return "flex_attention"
    return None


def backbone_config(cfg, source) -> tuple[dict[str, Any], Any]:
    """The keyword arguments every ``from_pretrained`` of the backbone takes (``extra``, the GGUF
    file) and its checked Hugging Face config."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = dict(cfg.extra)
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    check_model_folder(source.path, ("config", "weights"), gguf_file=source.gguf_file,
                       what="backbone")
    return kwargs, from_pretrained(AutoConfig, source.path, what="backbone config", **kwargs)


def load_backbone(source: BackboneSource, cfg: BackboneConfig, device: torch.device,
                  precision: str | None = None) -> tuple[nn.Module, BackboneInfo]:
    """The bare backbone (``AutoModel``, no LM head) on ``device``, frozen, and what it is.

    For training (``precision`` None) the weights are bf16 where ``cfg.bf16`` says so. For
    inference they follow ``precision``: bf16 weights for bf16; fp32 weights under fp16
    autocast (the residual stream, norms and Gemma-2's soft-capping stay in fp32) and for fp32;
    or, with ``cfg.load_in``, 8- or 4-bit weights (bitsandbytes, CUDA only)."""
    from transformers import AutoModel

    kwargs, hf_config = backbone_config(cfg, source)
    encoder = is_encoder(hf_config)
    bf16 = use_bf16(cfg, device) if precision is None else precision == "bf16"
    half = bf16 and cfg.finetune in ("lora", "frozen", "qlora")
    dtype = torch.bfloat16 if half else torch.float32
    if device.type == "cuda" and "attn_implementation" not in kwargs:
        kwargs["attn_implementation"] = gpu_attention(hf_config)
    bits = int(cfg.load_in[0]) if precision is not None and cfg.load_in else None
    if cfg.finetune == "qlora" or bits:
        kwargs["quantization_config"] = _quantization_config(cfg, device, bits,
                                                             compute=precision or "bf16")
        kwargs["device_map"] = {"": device.index or 0}
    with quiet_transformers():
        model = from_pretrained(AutoModel, source.path, what="backbone", dtype=dtype, **kwargs)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT-style pooler: unused (we pool ourselves), no dead weights
    if "quantization_config" not in kwargs:
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    pooling = cfg.pooling if cfg.pooling != "auto" else ("mean" if encoder else "last")
    max_positions = getattr(model.config, "max_position_embeddings", None)
    hidden = getattr(model.config, "hidden_size", None) or model.config.get_text_config().hidden_size
    return model, BackboneInfo(encoder, int(hidden), pooling, max_positions,
                               model.config.model_type)


def add_adapters(backbone: nn.Module, cfg: BackboneConfig) -> nn.Module:
    """Make the backbone trainable as ``cfg.finetune`` says: LoRA / QLoRA adapters or all
    weights. ``frozen`` leaves it as it is."""
    if cfg.finetune == "full":
        for p in backbone.parameters():
            p.requires_grad_(True)
    elif cfg.finetune in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        if cfg.finetune == "qlora":
            from peft import prepare_model_for_kbit_training

            backbone = prepare_model_for_kbit_training(
                backbone, use_gradient_checkpointing=cfg.gradient_checkpointing)
        target = cfg.lora_target
        if cfg.lora_layers is not None and target == "all-linear":
            # peft takes a layer selection only with named modules: every linear layer's name
            target = sorted({name.rsplit(".", 1)[-1] for name, m in backbone.named_modules()
                             if isinstance(m, nn.Linear)})
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=target, bias="none",
                          layers_to_transform=cfg.lora_layers)
        with quiet_transformers():
            backbone = get_peft_model(backbone, lora)
    if cfg.gradient_checkpointing and cfg.finetune != "frozen":
        enable_checkpointing(backbone)
    return backbone


def enable_checkpointing(model: nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant, through whichever name this
    transformers version has."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters (adapters, head, or all weights), detached on the CPU."""
    return {name: p.detach().to("cpu").contiguous()
            for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ConfigError(f"checkpoint does not fit this model (missing {missing[:3]}, "
                          f"unexpected {unknown[:3]})")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A content digest of a state dict (identifies a trained model for streamed predictions)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(name.encode())
        h.update(t.float().numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()[:20]
