import numpy as np
import polars as pl
import pytest

from prefpred.data.table import SCHEMA, PreferenceTable
from prefpred.errors import DataError
from prefpred.labels import swap_class_columns


def small(**over):
    data = {
        "id": ["1", "2", "3"],
        "prompt": [["hi"], ["Hello  World"], ["x", "y"]],
        "response_a": [["a1"], ["a2"], ["a3", "a4"]],
        "response_b": [["b1"], ["b2"], ["b3", "b4"]],
        "label": [0, 1, 2],
    }
    data.update(over)
    return PreferenceTable.from_frame(pl.DataFrame(data), source="t")


def test_schema_and_defaults():
    t = small()
    assert t.df.schema == pl.Schema(SCHEMA)
    assert t.weights().tolist() == [1.0, 1.0, 1.0]
    assert t.sources() == ["t"]
    # groups come from the normalised prompt: case and spacing do not matter
    t2 = small(prompt=[["hi"], ["hello world"], [" HI "]])
    g = t2.groups()
    assert g[0] == g[2] and g[0] != g[1]


def test_swap_exchanges_responses_models_and_labels():
    t = small(model_a=["m1", "m2", "m3"], model_b=["n1", "n2", "n3"],
              soft_label=[[0.7, 0.2, 0.1], None, [0.1, 0.3, 0.6]])
    s = t.swap()
    assert s.column("response_a").to_list() == t.column("response_b").to_list()
    assert s.column("model_a").to_list() == ["n1", "n2", "n3"]
    assert s.labels().tolist() == [1, 0, 2]
    assert s.column("soft_label").to_list()[0] == [0.2, 0.7, 0.1]
    assert s.column("soft_label").to_list()[1] is None
    assert s.swap().df.equals(t.df)


def test_with_swapped_doubles_rows_with_distinct_ids():
    t = small()
    d = t.with_swapped()
    assert len(d) == 6
    assert d.ids[3:] == ["1~swap", "2~swap", "3~swap"]
    assert d.labels().tolist() == [0, 1, 2, 1, 0, 2]


def test_swap_class_columns_matches_label_swap():
    logits = np.array([[1.0, 2.0, 3.0]])
    assert swap_class_columns(logits).tolist() == [[2.0, 1.0, 3.0]]


@pytest.mark.parametrize(
    "over,column",
    [
        ({"id": ["1", "1", "3"]}, "id"),
        ({"label": [0, 1, 5]}, "label"),
        ({"response_a": [["a"], [], ["c"]]}, "response_a"),
        ({"weight": [1.0, -1.0, 1.0]}, "weight"),
        ({"soft_label": [[0.5, 0.5, 0.5], None, None]}, "soft_label"),
    ],
)
def test_invariants_are_enforced(over, column):
    with pytest.raises(DataError) as err:
        small(**over)
    assert f"column '{column}'" in str(err.value)
    assert "row " in str(err.value)


def test_missing_required_column():
    with pytest.raises(DataError, match="missing column"):
        PreferenceTable.from_frame(pl.DataFrame({"id": ["1"], "prompt": [["p"]]}))


def test_fingerprint_tracks_content(tmp_path):
    t = small()
    assert t.fingerprint() == small().fingerprint()
    assert t.fingerprint() != small(label=[0, 1, 1]).fingerprint()
    t.write_parquet(tmp_path / "t.parquet")
    back = PreferenceTable.read_parquet(tmp_path / "t.parquet")
    assert back.df.equals(t.df)
    assert back.fingerprint() == t.fingerprint()


def test_soft_labels_fall_back_to_one_hot():
    t = small(soft_label=[[0.6, 0.3, 0.1], None, None])
    s = t.soft_labels()
    assert s.tolist() == [[0.6, 0.3, 0.1], [0, 1, 0], [0, 0, 1]]
    assert small().soft_labels() is None
