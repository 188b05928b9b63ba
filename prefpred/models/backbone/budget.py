"""``time_budget``: before predicting a file, time a warm-up on its own rows, project the whole
file (its token counts are known once rendered), and drop swap averaging or lower
``max_length`` until it fits, or refuse, saying which (:func:`.runtime.plan_budget`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from prefpred.data.table import PreferenceTable
from prefpred.errors import notice
from prefpred.models.backbone.batching import Sequences, token_budget_batches
from prefpred.models.backbone.runtime import BudgetPlan, hours, parse_duration, plan_budget


def warmup_batches(lengths: np.ndarray, max_tokens: int, max_rows: int | None,
                   n: int = 3) -> tuple[np.ndarray, list[np.ndarray]]:
    """An untimed first batch (the shortest: start-up costs) and ``n`` timed batches spread
    over the length distribution (longest first to shortest), from the real batching."""
    batches = token_budget_batches(lengths, max_tokens, max_rows)
    picks = np.unique(np.linspace(0, len(batches) - 1, num=min(n, len(batches))).astype(int))
    return batches[-1], [batches[i] for i in picks]


def measure(fn, lengths: np.ndarray, first: np.ndarray, timed: list[np.ndarray],
            clock=time.perf_counter) -> tuple[float, float]:
    """(tokens per second over the timed batches, seconds the warm-up took in all)."""
    t_start = clock()
    fn(first)
    t0 = clock()
    tokens = 0
    for rows in timed:
        fn(rows)
        tokens += int(lengths[rows].sum())
    t1 = clock()
    return tokens / max(t1 - t0, 1e-9), t1 - t_start


def fit_budget(model: Any, table: PreferenceTable, workers: list) -> tuple[bool, int]:
    """(swap averaging, max_length) for ``model`` to predict ``table`` within its
    ``time_budget``; what it measured, projected and changed goes to stderr."""
    import torch

    from prefpred.models.backbone import network
    from prefpred.models.backbone.runtime import autocast

    cfg = model.config
    budget = parse_duration(cfg.time_budget)
    rendered = model._render(table, keep=True)  # predicting at this max_length reuses it
    seqs = Sequences.from_series(rendered.ids)
    extra = network.length_features(rendered.full_lengths)
    pad_id = int(model._tokenizer.pad_token_id)
    net, device = workers[0]

    def logits(rows: np.ndarray) -> np.ndarray:
        ids, mask = seqs.pad(rows, pad_id)
        net.head_fp32 = model._precision == "fp16"
        with torch.inference_mode(), autocast(model._precision, device.type):
            out = net(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
                      extra[rows].to(device) if cfg.length_features else None)
        return out.float().cpu().numpy()

    first, timed = warmup_batches(seqs.lengths, cfg.infer_tokens, cfg.infer_batch_rows)
    rate, spent = measure(logits, seqs.lengths, first, timed)
    plan: BudgetPlan = plan_budget(seqs.lengths, tokens_per_s=rate, budget_s=budget,
                                   swap=cfg.swap_average, max_length=cfg.max_length,
                                   workers=len(workers), fixed_s=spent)
    notice(f"time budget {hours(budget)}: warm-up {rate:.0f} tokens/s per worker x "
           f"{len(workers)}; projected {hours(plan.projected_s)} for {len(table)} rows"
           + (f"; {'; '.join(plan.changes)}" if plan.changes else ""))
    return plan.swap_average, plan.max_length
