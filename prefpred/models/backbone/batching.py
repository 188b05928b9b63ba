"""Batches: token-budget batches for inference, swap-paired batches for training, padding, and
the collators that turn a training batch's rows into tensors.

A *token budget* bounds ``rows x longest row`` of a batch (the padded size a device sees), not a
row count: sorted by length, short sequences travel in large batches and long ones in small
batches, with almost no padding. Training batches hold each pair together with its swap, so both
orientations are in the same optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


def token_budget_batches(lengths: np.ndarray, max_tokens: int, max_rows: int | None = None, *,
                         order: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices in batches whose padded size ``rows x max length`` is at most ``max_tokens``.

    Rows are taken in ``order`` (default: longest first, so that an out-of-memory error shows up
    in the first batch). A row longer than the budget travels alone.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if order is None:
        order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    ordered = lengths[order]
    if n and (np.diff(ordered) <= 0).all():  # longest first: a batch's first row sets its width
        while start < n:
            rows = max(1, max_tokens // max(int(ordered[start]), 1))
            if max_rows is not None:
                rows = min(rows, max_rows)
            batches.append(order[start:start + rows])
            start += rows
        return batches
    while start < n:
        longest = 0
        end = start
        while end < n:
            longest_next = max(longest, int(lengths[order[end]]))
            rows = end - start + 1
            if end > start and (longest_next * rows > max_tokens
                                or (max_rows is not None and rows > max_rows)):
                break
            longest = longest_next
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def fixed_size_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``batch_size`` rows in the given order (the padded baseline)."""
    idx = np.arange(n)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def padding_stats(lengths: np.ndarray, batches: list[np.ndarray]) -> dict[str, float]:
    """Real tokens, padded tokens and the share of padding of a batching."""
    lengths = np.asarray(lengths)
    real = int(lengths.sum())
    padded = int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))
    return {"real_tokens": real, "padded_tokens": padded,
            "padding_share": 1 - real / padded if padded else 0.0, "batches": len(batches)}


def swap_paired_batches(pair_lengths: np.ndarray, max_tokens: int, max_pairs: int, *, seed: int,
                        epoch: int, copies: int = 2, bucket: int = 64) -> list[np.ndarray]:
    """Pair indices for one training epoch, each batch within the token budget.

    Every pair counts ``copies`` times (2: the pair and its swap, both in the batch). Pairs are
    shuffled, sorted by length inside buckets of ``bucket x max_pairs`` pairs (little padding,
    still random), cut into token-budget batches, and the batch order is shuffled. The order is
    a function of ``seed`` and ``epoch`` only.
    """
    rng = np.random.default_rng([seed, epoch])
    lengths = np.asarray(pair_lengths, dtype=np.int64)
    perm = rng.permutation(len(lengths))
    size = max(bucket * max_pairs, 1)
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), size):
        chunk = perm[start:start + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += token_budget_batches(lengths * copies, max_tokens, max_pairs, order=chunk)
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class Sequences:
    """Token sequences as one flat array and offsets (cheap slicing, no per-row objects)."""

    flat: np.ndarray  # int64 token ids
    offsets: np.ndarray  # (n + 1,)

    @classmethod
    def from_series(cls, ids: pl.Series) -> Sequences:
        lengths = ids.list.len().to_numpy().astype(np.int64)
        flat = ids.explode(empty_as_null=False).to_numpy().astype(np.int64)
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def pad(self, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)`` of the given rows (int64 arrays)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        width = max(int(lengths.max()) if len(rows) else 0, 1)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.arange(width)[None, :] < lengths[:, None]
        starts = self.offsets[rows]
        cols = np.broadcast_to(np.arange(width), ids.shape)
        src = (starts[:, None] + cols)[mask]
        ids[mask] = self.flat[src]
        return ids, mask.astype(np.int64)


@dataclass
class _SideCollator:
    """Rows of a training batch, once per side (a pair, then its swap): targets and weights."""

    targets: list  # per side: (n, 3) float tensor
    weights: Any  # (n,) float tensor

    def _labels(self, rows: np.ndarray) -> dict[str, Any]:
        import torch

        return {"targets": torch.cat([t[rows] for t in self.targets]),
                "weights": self.weights[rows].repeat(len(self.targets))}


@dataclass
class TokenCollator(_SideCollator):
    """Token sequences of every side padded to the batch's longest (one tensor for all sides),
    with the length features of the head when it takes them."""

    seqs: list[Sequences] = None  # per side
    pad_id: int = 0
    extra: list | None = None  # per side: (n, k) float tensor, or None

    def __call__(self, rows: np.ndarray) -> dict[str, Any]:
        import torch

        lengths = np.concatenate([s.lengths[rows] for s in self.seqs])
        width = int(lengths.max())
        ids = np.full((len(lengths), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(lengths), width), dtype=np.int64)
        offset = 0
        for s in self.seqs:
            part_ids, part_mask = s.pad(rows, self.pad_id)
            ids[offset:offset + len(rows), :part_ids.shape[1]] = part_ids
            mask[offset:offset + len(rows), :part_ids.shape[1]] = part_mask
            offset += len(rows)
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self.extra is not None:
            inputs["extra"] = torch.cat([e[rows] for e in self.extra])
        return {"inputs": inputs, **self._labels(rows)}


@dataclass
class FeatureCollator(_SideCollator):
    """Precomputed feature rows of every side (a frozen backbone's embeddings) for the head."""

    features: list = None  # per side: (n, d) float tensor

    def __call__(self, rows: np.ndarray) -> dict[str, Any]:
        import torch

        return {"inputs": {"x": torch.cat([f[rows] for f in self.features])},
                **self._labels(rows)}
