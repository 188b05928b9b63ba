"""The feature cache: keyed by data fingerprint and feature version; a stale cache is never read."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import PANDALM

from prefpred.data.formats import load_table
from prefpred.features import build as build_module
from prefpred.features import compute_features
from prefpred.features.cache import FeatureCache, FeatureStore, row_keys


@pytest.fixture(scope="module")
def pandalm():
    return load_table(PANDALM).take(np.arange(300))


def _edit_one_response(table, row: int):
    a = table.df["response_a"].to_list()
    a[row] = [a[row][0] + " (edited)"]
    return table.with_columns(response_a=a)


def _tamper(path, column: str, value: float) -> None:
    """Overwrite one feature column in a cache file, keeping its metadata (as if the file were
    stale but claimed to be current)."""
    arrow = pq.read_table(path)
    frame = pl.from_arrow(arrow).with_columns(pl.lit(value).alias(column))
    pq.write_table(frame.to_arrow().replace_schema_metadata(arrow.schema.metadata), path)


def test_build_writes_once_then_reads(pandalm, tmp_path):
    cache = FeatureCache(tmp_path)
    first, path, computed = cache.build(pandalm)
    assert computed and path.exists() and path.parent == tmp_path
    assert pandalm.fingerprint()[:32] in path.name and f"-v{cache.config.version}" in path.name
    meta = json.loads(pq.read_schema(path).metadata[b"prefpred_features"])
    assert meta["fingerprint"] == pandalm.fingerprint() and meta["rows"] == len(pandalm)
    _tamper(path, "a_chars_all", -1.0)  # proves the second call reads the file
    second, _, computed = cache.build(pandalm)
    assert not computed and (second["a_chars_all"] == -1.0).all()
    assert second.drop("a_chars_all").equals(first.drop("a_chars_all"))


def test_changed_data_misses_the_cache(pandalm, tmp_path):
    cache = FeatureCache(tmp_path)
    cache.build(pandalm)
    edited = _edit_one_response(pandalm, 3)
    assert cache.path_for(edited) != cache.path_for(pandalm)
    assert cache.load(edited) is None
    feats, _, computed = cache.build(edited)
    assert computed and feats.equals(compute_features(edited))


def test_a_file_whose_metadata_disagrees_is_not_read(pandalm, tmp_path):
    cache = FeatureCache(tmp_path)
    _, path, _ = cache.build(pandalm)
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[b"prefpred_features"])
    meta["fingerprint"] = "0" * 64  # e.g. a file copied over from other data
    pq.write_table(arrow.replace_schema_metadata({b"prefpred_features": json.dumps(meta)}), path)
    assert cache.load(pandalm) is None
    assert cache.compatible_files() == [path]  # same version: still usable row by row
    _, _, computed = cache.build(pandalm)
    assert computed


def test_a_new_feature_version_never_reads_old_files(pandalm, tmp_path, monkeypatch):
    old = FeatureCache(tmp_path)
    _, old_path, _ = old.build(pandalm)
    _tamper(old_path, "a_words_all", -5.0)
    monkeypatch.setattr(build_module, "FEATURE_VERSION", "999-test")
    new = FeatureCache(tmp_path)
    assert new.config.version.startswith("999-test")
    assert new.path_for(pandalm) != old_path
    assert new.load(pandalm) is None and new.compatible_files() == []
    store = FeatureStore(cache_dir=tmp_path)
    feats = store.features(pandalm)
    assert store.read_rows == 0 and store.computed_rows > 0
    assert (feats["a_words_all"] >= 0).all()


def test_store_reads_rows_from_the_cache_and_recomputes_changed_rows(pandalm, tmp_path):
    cache = FeatureCache(tmp_path)
    _, path, _ = cache.build(pandalm)
    _tamper(path, "s_tfidf_cos", 7.0)  # marks every value that came from the file
    store = FeatureStore(cache_dir=tmp_path)
    subset = pandalm.take(np.arange(10, 60))
    feats = store.features(subset)
    assert store.computed_rows == 0 and store.read_rows > 0
    assert (feats["s_tfidf_cos"] == 7.0).all()
    edited = _edit_one_response(subset, 4)
    feats = store.features(edited)
    assert store.computed_rows == 1  # only the changed row
    fresh = compute_features(edited.take([4]))
    assert feats.row(4) == fresh.row(0)
    assert (feats["s_tfidf_cos"].to_numpy()[np.arange(50) != 4] == 7.0).all()


def test_store_serves_any_subset_in_order_and_memoises(pandalm):
    store = FeatureStore()
    idx = np.array([5, 2, 200, 2, 17])  # out of order, a repeat
    feats = store.features(pandalm.take(idx))
    assert feats.equals(compute_features(pandalm)[idx.tolist()])
    computed = store.computed_rows
    store.features(pandalm.take(idx[::-1]))
    assert store.computed_rows == computed
    assert row_keys(pandalm.take([2])).equals(row_keys(pandalm.take([2])))


def test_features_build_command(cli, tmp_path):
    out = tmp_path / "features"
    res = cli("features", "build", "--competition", "pandalm", "--out", out)
    assert res.code == 0, res.err
    assert "1998 rows" in res.out and "computed" in res.out  # the table and its swapped pairs
    files = list(out.glob("*.parquet"))
    assert len(files) == 1
    res = cli("features", "build", "--competition", "pandalm", "--out", out)
    assert res.code == 0 and "up to date" in res.out
    res = cli("features", "build", "--competition", "pandalm", "--out", out, "--tokenizer",
              tmp_path / "missing.json")
    assert res.code == 2 and "no such tokenizer" in res.err


def test_the_store_extends_the_cache_so_a_second_process_computes_nothing(pandalm, tmp_path,
                                                                         capsys):
    def distinct(n: int) -> int:  # PandaLM repeats some rows: each is computed once
        return row_keys(pandalm.take(np.arange(n))).unique().height

    first = FeatureStore(cache_dir=tmp_path)
    feats = first.features(pandalm.take(np.arange(100)))
    assert first.computed_rows == distinct(100) and first.read_rows == 0
    assert f"{distinct(100)} computed and added to it (compiled kernels)" in capsys.readouterr().err
    second = FeatureStore(cache_dir=tmp_path)  # as a new process would start
    again = second.features(pandalm.take(np.arange(150)))
    assert second.read_rows == distinct(100)
    assert second.computed_rows == distinct(150) - distinct(100)
    assert again.head(100).equals(feats)
    assert f"{distinct(100)} rows read from the cache" in capsys.readouterr().err
    third = FeatureStore(cache_dir=tmp_path)
    third.features(pandalm.take(np.arange(150)))
    assert third.computed_rows == 0 and third.read_rows == distinct(150)
