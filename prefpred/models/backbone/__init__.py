"""The transformer backbone: a three-class classifier over Hugging Face encoders and decoders.

Small modules, one job each: :mod:`.config` (run configuration, presets, bundled backbones),
:mod:`.render` (prompt template, turn-aware truncation), :mod:`.batching` (token-budget and
swap-paired batches), :mod:`.network` (pooling, head, LoRA), :mod:`.train` (loop, checkpoints,
resume), :mod:`.inference` (sorted, budgeted, streamed, data-parallel), :mod:`.artifacts`
(save / load) and :mod:`.model` (the estimator).

``BackboneModel`` is imported on first use, so that reading a run config does not import torch.
"""

from __future__ import annotations

from typing import Any

from prefpred.models.backbone.config import BackboneConfig, load_backbone_config, resolve_backbone

__all__ = ["BackboneConfig", "BackboneModel", "load_backbone_config", "resolve_backbone"]


def __getattr__(name: str) -> Any:
    if name == "BackboneModel":
        from prefpred.models.backbone.model import BackboneModel

        return BackboneModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
