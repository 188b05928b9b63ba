"""Kaggle LMSYS arena files (train.csv / test.csv, the HF ``lmsys-arena-human-preference-55k``
parquet: JSON turn lists, one-hot winner columns) and the WSDM Cup multilingual arena (plain-text
prompt and responses, ``winner`` model_a / model_b, ``language``)."""

from __future__ import annotations

from prefpred.data.mapped import ColumnMap
from prefpred.labels import KAGGLE_COLUMNS, A, B

KAGGLE_LMSYS = ColumnMap(onehot=KAGGLE_COLUMNS, model_a="model_a", model_b="model_b",
                         optional=("model_a", "model_b"))
WSDM = ColumnMap(turns="text", label="winner", label_map={"model_a": A, "model_b": B},
                 model_a="model_a", model_b="model_b", language="language",
                 optional=("model_a", "model_b", "language"))
