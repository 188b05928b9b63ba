"""The class order is defined once (in prefpred.labels) and everything else derives from it."""

import ast
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import prefpred
from prefpred.data.mapped import labels_from_column
from prefpred.errors import DataError
from prefpred.labels import (
    CLASSES,
    KAGGLE_COLUMNS,
    LABEL_WORDS,
    LOGIT_COLUMNS,
    SWAP_PERMUTATION,
    class_index,
)

PACKAGE = Path(prefpred.__file__).parent
#: A string literal that spells a class: a bare class name, or a name built from one.
CLASS_LITERAL = re.compile(r"^(A|B|TIE|tie|winner_model_[ab]|winner_tie|"
                           r"(logit|prob|ece|logp)_(A|B|TIE))$")


def _string_literals(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_class_name_literal_outside_labels():
    """Scan the package source: class names and the Kaggle ``winner_*`` columns are spelt in
    prefpred/labels.py only; every other module derives them from CLASSES."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "labels.py":
            continue
        for line, value in _string_literals(path):
            if CLASS_LITERAL.match(value) or "winner_model_" in value:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}")
    assert not found, "class names spelt outside prefpred/labels.py:\n" + "\n".join(found)


def test_the_scan_catches_a_planted_literal(tmp_path):
    """The scan above is not vacuous: it finds literals that are planted."""
    planted = tmp_path / "m.py"
    planted.write_text('"""A docstring may say A."""\nX = {"a": "TIE"}\nY = "winner_model_b"\n')
    values = [v for _, v in _string_literals(planted)]
    assert sorted(v for v in values if CLASS_LITERAL.match(v) or "winner_model_" in v) == [
        "TIE", "winner_model_b"]


def test_names_derived_from_the_class_order():
    assert len(set(CLASSES)) == len(CLASSES) == 3
    assert [f"logit_{c}" for c in CLASSES] == LOGIT_COLUMNS
    assert KAGGLE_COLUMNS == ("winner_model_a", "winner_model_b", "winner_tie")
    # swapping the pair exchanges the two win classes and keeps the tie
    assert [CLASSES[i] for i in SWAP_PERMUTATION] == [CLASSES[1], CLASSES[0], CLASSES[2]]
    assert [class_index(c) for c in CLASSES] == [0, 1, 2]
    assert all(LABEL_WORDS[c.lower()] == i for i, c in enumerate(CLASSES))


@pytest.mark.parametrize("values,expected", [
    (["A", "b", "Tie", "model_a", "2", "1", " winner_model_b ", "draw"], [0, 1, 2, 0, 2, 1, 1, 2]),
    ([1.0, 2.0, 0.0], [1, 2, 0]),
    ([2, 0], [2, 0]),
])
def test_label_vocabulary(values, expected):
    out = labels_from_column(pl.Series("label", values), None, Path("f.csv"), "label")
    assert out.to_list() == expected


@pytest.mark.parametrize("values", [["A", "C"], ["A", "3"], ["A", None], [1.0, np.nan],
                                    [0, 5]])
def test_label_vocabulary_rejects_with_the_row(values):
    with pytest.raises(DataError, match="row 2, column 'label'"):
        labels_from_column(pl.Series("label", values), None, Path("f.csv"), "label")


def test_class_index_refuses_what_is_not_a_class():
    for bad in ("C", 3, -1, True, None, 1.5):
        with pytest.raises(ValueError):
            class_index(bad)
