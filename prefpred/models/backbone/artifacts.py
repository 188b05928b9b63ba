"""Saved models: adapter, head, tokenizer and the prefpred config, in one folder (safetensors).

::

    artifact/
      prefpred_config.json     parameters, backbone, class order, digest of the weights
      head.safetensors         the classifier head
      adapter/                 LoRA / QLoRA adapter (peft save_pretrained: adapter_model.safetensors)
      backbone/                finetune=full: the whole fine-tuned backbone (safetensors)
      tokenizer/               the tokenizer, pad token included

The base weights of a LoRA or frozen model are not copied: they are the bundled package or the
local folder named in the config (``--backbone`` at load time points elsewhere). The folder is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from prefpred import __version__
from prefpred.errors import ConfigError
from prefpred.labels import CLASSES

ARTIFACT_FORMAT = 1
CONFIG_FILE = "prefpred_config.json"
#: Parameters that shape the network: an artifact loads only with the values it was saved with.
SHAPE_KEYS = ("finetune", "encode", "pooling", "head", "head_hidden", "length_features",
              "lora_r", "lora_alpha", "lora_target", "lora_layers", "quant_bits")
#: Parameters that decide what the network sees: using an artifact as it is (``epochs=0``) with
#: other values would predict on inputs it was never trained on.
INPUT_KEYS = ("max_length", "prompt_share", "min_response_tokens", "truncation",
              "chat_template", "instruction", "encode")
#: Parameters that may differ at load time (where and how to predict).
RUNTIME_KEYS = ("infer_tokens", "infer_batch_rows", "swap_average", "device", "bf16",
                "backbone", "gguf_file", "cache_dir", "extra")


def save_artifact(model, path: str | Path) -> Path:
    """Write a fitted :class:`BackboneModel` to ``path`` (replacing what is there)."""
    from safetensors.torch import save_file

    net = model._net
    if net is None:
        raise RuntimeError("the model is not fitted")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cfg = model.config
    from prefpred.models.backbone.network import quiet_transformers

    with quiet_transformers():
        if cfg.finetune in ("lora", "qlora"):
            net.backbone.save_pretrained(tmp / "adapter")
        elif cfg.finetune == "full":
            net.backbone.save_pretrained(tmp / "backbone")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.head.state_dict().items()},
              str(tmp / "head.safetensors"))
    model._tokenizer.save_pretrained(tmp / "tokenizer")
    source = model._source
    info = {
        "format": ARTIFACT_FORMAT,
        "prefpred_version": __version__,
        "classes": list(CLASSES),
        "params": cfg.to_dict(),
        "backbone": {"name": source.name, "path": str(source.path),
                     "gguf_file": source.gguf_file},
        "encoder": model._info.encoder,
        "pooling": model._info.pooling,
        "hidden_size": model._info.hidden_size,
        "weights_digest": model.weights_digest,
    }
    (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    if path.exists():
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    return path


def read_artifact_info(path: str | Path) -> dict[str, Any]:
    """The checked ``prefpred_config.json`` of a saved backbone artifact folder."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.exists():
        raise ConfigError(f"{path}: not a prefpred backbone artifact (no {CONFIG_FILE})")
    info = json.loads(file.read_text())
    if info.get("format") != ARTIFACT_FORMAT:
        raise ConfigError(f"{file}: artifact format {info.get('format')!r} is not "
                          f"{ARTIFACT_FORMAT}; re-save it with this prefpred")
    if tuple(info.get("classes", ())) != CLASSES:
        raise ConfigError(f"{file}: class order {info.get('classes')} is not {list(CLASSES)}")
    return info


def check_compatible(saved: dict[str, Any], params: dict[str, Any], path: Path, *,
                     as_is: bool = False) -> None:
    """Network-shaping parameters must equal the artifact's (to load or continue training);
    ``as_is`` (no further training) also requires the same input rendering."""
    keys = SHAPE_KEYS + (INPUT_KEYS if as_is else ())
    for key in keys:
        if key in params and params[key] != saved.get(key):
            raise ConfigError(f"{path}: the artifact was saved with {key}={saved.get(key)!r}, "
                              f"not {params[key]!r} (pass the same value, or use "
                              "`prefpred predict`, which takes the artifact's)")


def load_weights(net, path: Path, finetune: str, trainable: bool) -> None:
    """Head weights (and, for LoRA, the adapter) from an artifact into a built network whose
    backbone is the bare base model (LoRA) or already the saved one (full / frozen)."""
    from safetensors.torch import load_file

    if finetune in ("lora", "qlora"):
        from peft import PeftModel

        from prefpred.models.backbone.network import quiet_transformers

        with quiet_transformers():
            net.backbone = PeftModel.from_pretrained(net.backbone, path / "adapter",
                                                     is_trainable=trainable)
    state = load_file(str(path / "head.safetensors"))
    try:
        net.head.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{path}/head.safetensors does not fit the head ({err})") from None
