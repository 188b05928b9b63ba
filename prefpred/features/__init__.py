"""Length, style, overlap and similarity features (polars), their swap symmetry and cache."""

from prefpred.features.build import (
    FEATURE_VERSION,
    FeatureConfig,
    compute_features,
    feature_names,
)
from prefpred.features.symmetry import feature_role, swap_features, swap_partner

__all__ = [
    "FEATURE_VERSION",
    "FeatureConfig",
    "compute_features",
    "feature_names",
    "feature_role",
    "swap_features",
    "swap_partner",
]
