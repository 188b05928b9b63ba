"""Data: the canonical table (:mod:`.table`), one reader per source family (:mod:`.sources`),
the column-mapped reader (:mod:`.mapped`), the format registry (:mod:`.formats`), folds
(:mod:`.folds`) and export (:mod:`.export`)."""

from prefpred.data.formats import FORMATS, load_table
from prefpred.data.table import PreferenceTable

__all__ = ["FORMATS", "PreferenceTable", "load_table"]
