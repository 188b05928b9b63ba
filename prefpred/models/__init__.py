"""Base models: every one fits on a PreferenceTable and emits (n, 3) logits."""

from prefpred.models.base import (
    MODEL_REGISTRY,
    PreferenceModel,
    build_model,
    model_names,
    swap_averaged_logits,
)

__all__ = ["MODEL_REGISTRY", "PreferenceModel", "build_model", "model_names", "swap_averaged_logits"]
