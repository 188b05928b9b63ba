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
import shutil
from pathlib import Path
from typing import Any

from prefpred import __version__
from prefpred.errors import ConfigError
from prefpred.io import atomic_dir
from prefpred.labels import CLASSES

ARTIFACT_FORMAT = 1
CONFIG_FILE = "prefpred_config.json"
#: Everything a saved artifact holds at its top level (adapter or backbone by finetune mode).
ARTIFACT_ENTRIES = ("adapter", "backbone", "head.safetensors", "tokenizer", CONFIG_FILE)
#: Parameters that shape the network: an artifact loads only with the values it was saved with.
SHAPE_KEYS = ("finetune", "encode", "pooling", "head", "head_hidden", "length_features",
              "lora_r", "lora_alpha", "lora_target", "lora_layers", "quant_bits")
#: Parameters that decide what the network sees: using an artifact as it is (``epochs=0``) with
#: other values would predict on inputs it was never trained on.
INPUT_KEYS = ("max_length", "prompt_share", "min_response_tokens", "truncation",
              "chat_template", "instruction", "encode")
#: Parameters that may differ at load time (where and how to predict).
RUNTIME_KEYS = ("infer_tokens", "infer_batch_rows", "swap_average", "device", "bf16",
                "backbone", "gguf_file", "cache_dir", "extra", "precision", "load_in",
                "devices", "split", "time_budget")


def save_artifact(model, path: str | Path) -> Path:
    """Write a fitted :class:`BackboneModel` to ``path`` (replacing what is there)."""
    net = model._net
    if net is None:
        raise RuntimeError("the model is not fitted")
    path = Path(path)
    with atomic_dir(path) as tmp:
        _write_artifact(model, net, tmp)
    return path


def _write_artifact(model, net, tmp: Path) -> None:
    from safetensors.torch import save_file

    from prefpred.models.backbone.network import quiet_transformers

    cfg = model.config
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


def read_artifact_info(path: str | Path) -> dict[str, Any]:
    """The checked ``prefpred_config.json`` of a saved backbone artifact folder."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.exists():
        raise ConfigError(f"{path}: not a prefpred backbone artifact (no {CONFIG_FILE})")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ConfigError(f"{file}: cannot be read as JSON ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("params"), dict):
        raise ConfigError(f"{file}: expected an object with a 'params' table; re-save the "
                          "artifact with this prefpred")
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


def average_artifacts(paths: list[Path], out: str | Path) -> Path:
    """One artifact whose weights are the element-wise mean of ``paths``' (fold models of one
    configuration: the same backbone, shape and adapter layout, checked). The LoRA adapter
    matrices, the head and, for ``finetune=full``, the backbone are averaged tensor by tensor;
    the tokenizer and config are the first artifact's. Fold models trained from the same seed
    start from the same adapter initialisation, which keeps their matrices aligned; the
    out-of-fold estimate is the fold models', not the average's (the report says so)."""

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError("weight averaging needs at least two artifacts")
    infos = [read_artifact_info(p) for p in paths]
    first = infos[0]
    for path, info in zip(paths[1:], infos[1:], strict=True):
        for key in SHAPE_KEYS + INPUT_KEYS:
            if info["params"].get(key) != first["params"].get(key):
                raise ConfigError(f"{path}: {key}={info['params'].get(key)!r} differs from "
                                  f"{paths[0]}'s {first['params'].get(key)!r}: not averageable")
        if info["backbone"] != first["backbone"]:
            raise ConfigError(f"{path}: another backbone than {paths[0]}'s: not averageable")
    out = Path(out)
    with atomic_dir(out) as tmp:
        shutil.copytree(paths[0], tmp, dirs_exist_ok=True)
        _average_into(tmp, paths, first)
    return out


def _average_into(tmp: Path, paths: list[Path], first: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    files = sorted(f.relative_to(paths[0]) for f in paths[0].rglob("*.safetensors"))
    for rel in files:
        states = []
        for p in paths:
            if not (p / rel).is_file():
                raise ConfigError(f"{p}: no {rel}: not averageable with {paths[0]}")
            states.append(load_file(str(p / rel)))
        keys = set(states[0])
        for p, state in zip(paths, states, strict=True):
            if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
                raise ConfigError(f"{p / rel}: other tensors than {paths[0] / rel}: "
                                  "not averageable")
        mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
                .contiguous() for k in sorted(keys)}
        save_file(mean, str(tmp / rel))
    info = {**first, "averaged_from": len(paths), "weights_digest": None}
    (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))


def average_saved_models(dirs: list[Path], out: str | Path) -> Path:
    """:func:`average_artifacts` of saved backbone models (``prefpred.models.base.save_model``
    folders, e.g. a run's fold models): one saved model at ``out``."""
    from prefpred.models.base import MODEL_FILE, write_model_info

    out = Path(out)
    with atomic_dir(out) as tmp:
        average_artifacts([Path(d) / "artifact" for d in dirs], tmp / "artifact")
        info = json.loads((Path(dirs[0]) / MODEL_FILE).read_text(encoding="utf-8"))
        write_model_info(tmp, info["model"], info["params"])
    return out
