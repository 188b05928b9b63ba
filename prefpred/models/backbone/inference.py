"""Fast inference: length-sorted token-budget batches, streamed to disk, resumable, data-parallel.

:func:`run_batches` applies a function to token-budget batches of rows (longest first, so that a
too-large budget fails at once). With a ``stream_dir`` every few thousand rows of output are
written there as a chunk file (atomically), and a re-run after an interrupt computes only the
batches no chunk holds. Under ``accelerate launch`` each process takes every ``world``-th batch;
the chunks (or, without a stream folder, ``gather_object``) bring the parts together.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prefpred.io import atomic_path, read_back, write_json_atomic
from prefpred.models.backbone.batching import token_budget_batches

#: Called after every inference batch with the batch count so far (tests simulate a kill).
_after_batch: Callable[[int], None] | None = None
_lock = threading.Lock()


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _chunk_ok(chunk: dict[str, np.ndarray]) -> bool:
    rows, values = chunk.get("rows"), chunk.get("values")
    # values may hold non-finite logits (fp16 overflow): the model recomputes those rows
    return chunk.get("batches") is not None and rows is not None and values is not None \
        and values.ndim == 2 and len(values) == len(rows)


def _read_chunks(stream_dir: Path) -> list[dict[str, np.ndarray]]:
    """Streamed outputs read back; a truncated or foreign chunk is removed (its batches are
    recomputed), with one line saying so."""
    out = []
    for path in sorted(stream_dir.glob("chunk_*.npz")):
        chunk = read_back(path, _load_chunk, "the streamed prediction chunk", check=_chunk_ok)
        if chunk is None:
            path.unlink(missing_ok=True)
            continue
        out.append(chunk)
    return out


def _prepare_stream(stream_dir: Path, meta: dict[str, Any], is_main: bool) -> None:
    meta_file = stream_dir / "meta.json"
    if is_main:
        if meta_file.exists() and read_back(meta_file, lambda p: json.loads(p.read_text()),
                                            "the stream's key") != json.loads(
                json.dumps(meta, sort_keys=True, default=str)):
            shutil.rmtree(stream_dir)
        stream_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(meta_file, meta)


def run_batches(fn: Callable[[np.ndarray], np.ndarray] | list[Callable[[np.ndarray], np.ndarray]],
                lengths: np.ndarray, *, out_dim: int, max_tokens: int,
                max_rows: int | None = None, stream_dir: Path | None = None,
                meta: dict[str, Any] | None = None, flush_rows: int = 4096,
                progress: bool = True, desc: str = "predict") -> np.ndarray:
    """``fn(rows) -> (len(rows), out_dim)`` over all rows, in token-budget batches.

    Returns an ``(n, out_dim)`` float32 array in row order. With ``stream_dir``, outputs already
    streamed there by a run with the same ``meta`` are read back instead of recomputed. A list
    of functions is one worker each (a model replica per device): worker ``w`` takes every
    ``len(fn)``-th batch from the ``w``-th, in a thread of its own, and the outputs are merged
    by row, so the result does not depend on the number of workers.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from prefpred.models.backbone.network import distributed_state
    from prefpred.models.backbone.runtime import split_batches

    fns = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    state = distributed_state()
    world, rank = state.num_processes, state.process_index
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    result = np.full((n, out_dim), np.nan, dtype=np.float32)
    filled = np.zeros(n, dtype=bool)
    batches = token_budget_batches(lengths, max_tokens, max_rows)
    done: set[int] = set()
    if stream_dir is not None:
        _prepare_stream(stream_dir, meta or {}, state.is_main_process)
        state.wait_for_everyone()
        for chunk in _read_chunks(stream_dir):
            done.update(int(b) for b in chunk["batches"])
    todo = [b for b in range(len(batches)) if b % world == rank and b not in done]
    local_parts: list[tuple[np.ndarray, np.ndarray]] = []
    total = int(lengths[np.concatenate([batches[b] for b in todo])].sum()) if todo else 0
    bar = tqdm(total=total, desc=desc, unit="tok", unit_scale=True,
               disable=True if (not progress or rank != 0) else None,  # None: off without a TTY
               leave=False, dynamic_ncols=True)
    counter = {"batches": 0, "rows": 0}

    def work(worker: int, mine: list[int]) -> None:
        buffer: dict[str, list] = {"batches": [], "rows": [], "values": []}

        def flush() -> None:
            if not buffer["batches"]:
                return
            rows = np.concatenate(buffer["rows"])
            values = np.concatenate(buffer["values"]).astype(np.float32)
            if stream_dir is not None:
                name = f"chunk_{min(buffer['batches']):06d}_{os.getpid()}_{worker}.npz"
                with atomic_path(stream_dir / name) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, batches=np.asarray(buffer["batches"], dtype=np.int64),
                             rows=rows, values=values)
            else:
                local_parts.append((rows, values))
            for key in buffer:
                buffer[key].clear()

        try:
            for b in mine:
                rows = batches[b]
                values = np.asarray(fns[worker](rows), dtype=np.float32).reshape(len(rows),
                                                                                 out_dim)
                buffer["batches"].append(b)
                buffer["rows"].append(rows)
                buffer["values"].append(values)
                if sum(len(r) for r in buffer["rows"]) >= flush_rows:
                    flush()
                with _lock:
                    bar.update(int(lengths[rows].sum()))
                    counter["batches"] += 1
                    counter["rows"] += len(rows)
                    elapsed = bar.format_dict.get("elapsed") or 0.0
                    if elapsed > 0:
                        bar.set_postfix_str(f"{counter['rows'] / elapsed:.1f} rows/s",
                                            refresh=False)
                    if _after_batch is not None:
                        _after_batch(counter["batches"])
        finally:
            flush()

    try:
        shares = [[todo[i] for i in idx] for idx in split_batches(len(todo), len(fns))]
        if len(fns) == 1:
            work(0, shares[0])
        else:
            with ThreadPoolExecutor(len(fns)) as pool:
                for future in [pool.submit(work, w, share) for w, share in enumerate(shares)]:
                    future.result()
    finally:
        bar.close()

    if stream_dir is not None:
        state.wait_for_everyone()
        for chunk in _read_chunks(stream_dir):
            result[chunk["rows"]] = chunk["values"]
            filled[chunk["rows"]] = True
        state.wait_for_everyone()  # every process has read the chunks: the folder may go
    else:
        if world > 1:
            from accelerate.utils import gather_object

            local_parts = [part for parts in gather_object([local_parts]) for part in parts]
        for rows, values in local_parts:
            result[rows] = values
            filled[rows] = True
    if not filled.all():
        raise RuntimeError("inference left rows without output (an incomplete stream folder?)")
    return result


class EmbeddingCache:
    """Pooled embeddings of token sequences, by content digest: in memory for the process, and
    on disk (``directory/<model key>/shard_*.npz``) when a directory is given."""

    _memory: dict[str, dict[str, np.ndarray]] = {}

    def __init__(self, directory: Path | None, model_key: str):
        self.model_key = model_key
        self.directory = Path(directory) / model_key if directory is not None else None
        self.store = EmbeddingCache._memory.setdefault(model_key, {})
        if self.directory is not None and self.directory.is_dir():
            for shard in sorted(self.directory.glob("shard_*.npz")):
                z = read_back(shard, _load_chunk, "the embedding cache shard",
                              check=lambda z: len(z["keys"]) == len(z["values"])
                              and bool(np.isfinite(z["values"]).all()))
                if z is None:
                    shard.unlink(missing_ok=True)
                    continue
                keys = z["keys"]
                if keys.size and str(keys[-1]) in self.store:
                    continue
                self.store.update(zip(keys.tolist(), z["values"], strict=True))

    def missing(self, digests: list[str]) -> list[int]:
        return [i for i, d in enumerate(digests) if d not in self.store]

    def add(self, digests: list[str], values: np.ndarray, write: bool = True) -> None:
        values = np.asarray(values, dtype=np.float32)
        self.store.update(zip(digests, values, strict=True))
        if self.directory is not None and write and digests:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"shard_{digests[0][:12]}_{len(digests)}_{os.getpid()}.npz"
            with atomic_path(self.directory / name) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, keys=np.asarray(digests), values=values)

    def get(self, digests: list[str]) -> np.ndarray:
        return np.stack([self.store[d] for d in digests])
