"""Feature caches: parquet files keyed by data fingerprint and feature version, and an in-process
memo keyed by row content.

* :class:`FeatureCache` writes ``<root>/<fingerprint>-v<version>.parquet`` for a whole table
  (``prefpred features build``). The file records the table fingerprint, the feature version
  and the polars version in its metadata and is only read back when all three match, so a
  stale file is never read: other data, other feature definitions or another polars (whose row
  hashes differ) all miss.
* :class:`FeatureStore` serves the features of any table (a CV fold, a swapped copy) by row:
  each row is keyed by a 128-bit hash of exactly the columns features are computed from
  (prompt, responses, source). Rows seen before in this process, or present in a cache file of
  the same feature and polars version, are not recomputed; a row whose content changed has
  another key and is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Final

import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import notice
from prefpred.features import kernels
from prefpred.features.build import FeatureConfig, compute_features, feature_names
from prefpred.io import atomic_path, read_back

#: The table columns features are computed from (and so what a row key hashes).
INPUT_COLUMNS: Final = ("prompt", "response_a", "response_b", "source")
KEY_COLUMNS: Final = ("_k0", "_k1")
_META_KEY: Final = b"prefpred_features"


def row_keys(table: PreferenceTable) -> pl.DataFrame:
    """Two 64-bit content hashes per row (``_k0``, ``_k1``) of :data:`INPUT_COLUMNS`."""
    inputs = table.df.select(INPUT_COLUMNS)
    return pl.DataFrame({"_k0": inputs.hash_rows(seed=0), "_k1": inputs.hash_rows(seed=1)})


def _metadata(path: Path) -> dict | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[_META_KEY])
    except (OSError, KeyError, ValueError):
        return None


class FeatureCache:
    """Whole-table feature files under ``root`` (default: the project's ``features/`` folder)."""

    def __init__(self, root: str | Path = "features", config: FeatureConfig | None = None):
        self.root = Path(root)
        self.config = config or FeatureConfig()

    def path_for(self, table: PreferenceTable) -> Path:
        return self.root / f"{table.fingerprint()[:32]}-v{self.config.version}.parquet"

    def _expected(self, fingerprint: str, rows: int) -> dict:
        return {"fingerprint": fingerprint, "feature_version": self.config.version,
                "polars": pl.__version__, "rows": rows,
                "columns": feature_names(self.config)}

    def load(self, table: PreferenceTable) -> pl.DataFrame | None:
        """The cached features of exactly this table, or None (missing, stale or foreign)."""
        path = self.path_for(table)
        if not path.exists():
            return None
        meta = _metadata(path)
        if meta is None:
            notice(f"the feature cache file {path} is unreadable; recomputing its features")
            return None
        if meta != self._expected(table.fingerprint(), len(table)):
            return None
        names = [*KEY_COLUMNS, *feature_names(self.config)]
        frame = read_back(path, pl.read_parquet, "the feature cache file",
                          check=lambda f: f.height == len(table) and f.columns == names)
        return None if frame is None else frame.drop(KEY_COLUMNS)

    def build(self, table: PreferenceTable, *, progress: bool = False,
              rebuild: bool = False) -> tuple[pl.DataFrame, Path, bool]:
        """Features of ``table`` from the cache, or computed and written. Returns
        ``(features, path, computed)``."""
        path = self.path_for(table)
        if not rebuild:
            cached = self.load(table)
            if cached is not None:
                return cached, path, False
        features = compute_features(table, self.config, progress=progress)
        self.write(table, features)
        return features, path, True

    def write(self, table: PreferenceTable, features: pl.DataFrame) -> Path:
        return self.write_rows(row_keys(table), features, self.path_for(table),
                               table.fingerprint())

    def write_rows(self, keys: pl.DataFrame, features: pl.DataFrame, path: Path | None = None,
                   fingerprint: str | None = None) -> Path:
        """Features of rows given by their keys (``_k0``, ``_k1``), as a cache file (named by
        the keys' digest unless ``path`` is given); read back row by row by any table."""
        if fingerprint is None:
            fingerprint = hashlib.sha256(keys.select(KEY_COLUMNS).to_numpy().tobytes()
                                         ).hexdigest()
        path = path or self.root / f"rows-{fingerprint[:32]}-v{self.config.version}.parquet"
        frame = pl.concat([keys.select(KEY_COLUMNS), features], how="horizontal")
        meta = json.dumps(self._expected(fingerprint, keys.height))
        arrow = frame.to_arrow()
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               _META_KEY: meta.encode()})
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:
            pq.write_table(arrow, tmp)
        return path

    def compatible_files(self) -> list[Path]:
        """Cache files of this feature version and polars version (any data)."""
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob(f"*-v{self.config.version}.parquet")):
            meta = _metadata(path)
            if meta and meta.get("feature_version") == self.config.version and \
                    meta.get("polars") == pl.__version__ and \
                    meta.get("columns") == feature_names(self.config):
                out.append(path)
        return out


class FeatureStore:
    """Features of any table, row by row, computing each distinct row at most once per process.

    ``cache_dir``: a :class:`FeatureCache` folder whose compatible files are consulted before
    computing, and extended with every row computed (a new file per batch of new rows): a
    second run, another model on the same data or a new hold-out split recomputes nothing it
    has. ``max_rows`` bounds the memo; past it the memo starts afresh.
    """

    def __init__(self, config: FeatureConfig | None = None, cache_dir: str | Path | None = None,
                 max_rows: int = 2_000_000):
        self.config = config or FeatureConfig()
        self.cache = FeatureCache(cache_dir, self.config) if cache_dir is not None else None
        self.max_rows = max_rows
        self._memo: pl.DataFrame | None = None
        self._lock = threading.Lock()
        self.computed_rows = 0  # rows computed (not found) so far, for tests and logs
        self.read_rows = 0  # rows found in cache files

    def _extend_cache(self, keys: pl.DataFrame, computed: pl.DataFrame) -> None:
        try:
            self.cache.write_rows(keys, computed)
        except OSError as err:  # a cache that cannot be written is not an error
            notice(f"features: cannot extend the cache {self.cache.root} ({err})")

    def _lookup(self, keys: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        return keys.lazy().join(frame.lazy(), on=list(KEY_COLUMNS), how="inner").collect()

    def features(self, table: PreferenceTable, progress: bool = False) -> pl.DataFrame:
        """The feature frame of ``table`` (row order kept), as :func:`compute_features` gives."""
        with self._lock:
            read_before, computed_before = self.read_rows, self.computed_rows
            keys = row_keys(table).with_row_index("_i")
            found = [] if self._memo is None else [self._lookup(keys, self._memo)]
            missing = keys.join(found[0].select(KEY_COLUMNS), on=list(KEY_COLUMNS),
                                how="anti") if found else keys
            new_parts = []
            if missing.height and self.cache is not None:
                for path in self.cache.compatible_files():
                    wanted = missing.drop("_i")
                    hit = read_back(path, lambda p, w=wanted: self._lookup(
                        w, pl.scan_parquet(p)).unique(list(KEY_COLUMNS)),
                        "the feature cache file")
                    if hit is None:
                        continue
                    if hit.height:
                        new_parts.append(hit)
                        self.read_rows += hit.height
                        missing = missing.join(hit.select(KEY_COLUMNS), on=list(KEY_COLUMNS),
                                               how="anti")
                    if not missing.height:
                        break
            if missing.height:
                unique = missing.unique(list(KEY_COLUMNS), keep="first", maintain_order=True)
                computed = compute_features(table.take(unique["_i"].to_numpy()), self.config,
                                            progress=progress)
                self.computed_rows += unique.height
                new_parts.append(pl.concat([unique.select(KEY_COLUMNS), computed],
                                           how="horizontal"))
                if self.cache is not None:
                    self._extend_cache(unique.select(KEY_COLUMNS), computed)
            read_now, computed_now = self.read_rows - read_before, \
                self.computed_rows - computed_before
            if self.cache is not None and (read_now or computed_now):
                notice(f"features: {read_now} rows read from the cache {self.cache.root}, "
                       f"{computed_now} computed and added to it"
                       + (f" ({kernels.describe()})" if computed_now else ""))
            parts = [f.drop("_i").unique(list(KEY_COLUMNS)) for f in found] + new_parts
            available = pl.concat(parts, how="vertical")
            out = keys.join(available, on=list(KEY_COLUMNS), how="inner").sort("_i")
            if out.height != len(table):  # pragma: no cover - defensive
                raise RuntimeError("feature store lost rows")
            if new_parts:
                new = pl.concat(new_parts, how="vertical")
                if self._memo is not None and self._memo.height + new.height > self.max_rows:
                    self._memo = None
                self._memo = new if self._memo is None else pl.concat([self._memo, new])
            return out.select(feature_names(self.config))


_STORES: dict[tuple[str, str | None], FeatureStore] = {}


def shared_store(config: FeatureConfig | None = None, cache_dir: str | Path | None = None
                 ) -> FeatureStore:
    """One :class:`FeatureStore` per (feature version, cache folder) in this process."""
    config = config or FeatureConfig()
    key = (config.version, None if cache_dir is None else str(Path(cache_dir).resolve()))
    if key not in _STORES:
        _STORES[key] = FeatureStore(config, cache_dir)
    return _STORES[key]
