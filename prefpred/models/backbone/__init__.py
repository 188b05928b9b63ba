"""The transformer backbone: a three-class classifier over Hugging Face encoders and decoders.

Small modules, one job each: :mod:`.config` (run configuration, presets, bundled backbones),
:mod:`.render` (prompt template, turn-aware truncation), :mod:`.batching` (token-budget and
swap-paired batches), :mod:`.network` (pooling, head, LoRA), :mod:`.train` (loop, checkpoints,
resume), :mod:`.inference` (sorted, budgeted, streamed, data-parallel), :mod:`.artifacts`
(save / load) and :mod:`.model` (the estimator).
"""

from prefpred.models.backbone.config import BackboneConfig, load_run_config, resolve_backbone
from prefpred.models.backbone.model import BackboneModel

__all__ = ["BackboneConfig", "BackboneModel", "load_run_config", "resolve_backbone"]
