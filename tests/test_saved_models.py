"""Every registered feature model saves its fitted state and loads it back to the same logits;
a saved-model folder that is damaged or hostile is a one-line error, never foreign code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefpred.errors import DataError
from prefpred.models.base import build_model, load_model, save_model

MODELS = {
    "uniform": {},
    "prior": {"symmetric": False, "smoothing": 0.5},
    "lgbm": {"n_estimators": 15, "num_leaves": 5, "min_child_samples": 5,
             "feature_set": "length", "feature_cache": None},
    "tfidf": {"word_max_features": 300, "char_max_features": 300},
}


@pytest.fixture(scope="module")
def split(kaggle_table):
    return kaggle_table.take(np.arange(120)), kaggle_table.take(np.arange(120, 160))


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory):
    train, test = split
    base = tmp_path_factory.mktemp("saved")
    out = {}
    for name, params in MODELS.items():
        model = build_model(name, params).fit(train)
        out[name] = (save_model(model, name, base / name), model.predict_logits(test))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_saved_model_predicts_what_it_did(name, saved, split):
    folder, logits = saved[name]
    np.testing.assert_allclose(load_model(folder).predict_logits(split[1]), logits,
                               rtol=1e-6, atol=1e-9)


def test_a_saved_model_never_takes_its_write_folder_from_the_file(saved):
    folder, _ = saved["lgbm"]
    info = json.loads((folder / "model.json").read_text())
    assert "feature_cache" in info["params"]
    info["params"]["feature_cache"] = "/somewhere/else"
    copy = folder.parent / "lgbm-hostile"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    (copy / "model.json").write_text(json.dumps(info))
    assert load_model(copy).feature_cache is None


def _damage(folder, how: str, where: str, seed: int) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = folder / "model.json" if where == "model.json" else files[seed % len(files)]
    data = target.read_bytes()
    rng = np.random.default_rng(seed)
    if how == "truncate":
        target.write_bytes(data[: int(rng.integers(0, max(1, len(data))))])
    elif how == "flip" and data:
        i = int(rng.integers(0, len(data)))
        target.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:])
    elif how == "delete":
        target.unlink()
    elif how == "json":
        info = json.loads((folder / "model.json").read_text())
        info[["model", "params", "format", "kind"][seed % 4]] = [
            "os.system", {"n_estimators": -1}, 99, None][seed % 4]
        (folder / "model.json").write_text(json.dumps(info))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(MODELS)), how=st.sampled_from(["truncate", "flip", "delete",
                                                                   "json"]),
       where=st.sampled_from(["model.json", "any"]), seed=st.integers(0, 10_000))
def test_a_damaged_saved_model_is_one_line_error_or_still_loads(saved, split, tmp_path_factory,
                                                                 name, how, where, seed):
    folder = tmp_path_factory.mktemp("damaged") / name
    shutil.copytree(saved[name][0], folder)
    _damage(folder, how, where, seed)
    try:
        model = load_model(folder)
    except DataError as err:
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    logits = model.predict_logits(split[1])  # what loads predicts finite numbers
    assert np.isfinite(logits).all()
