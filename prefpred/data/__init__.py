"""Data: the canonical table, format adapters, folds and export."""

from prefpred.data.adapters import FORMATS, load_table
from prefpred.data.table import PreferenceTable

__all__ = ["FORMATS", "PreferenceTable", "load_table"]
