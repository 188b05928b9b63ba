"""Where and how inference runs: the precision a device gets, the devices rows are split over,
and the plan that fits a test file into a time budget. Pure functions of their inputs (a
device's compute capability, recorded warm-up timings), so they are tested without a GPU.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import numpy as np

from prefpred.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def choose_precision(requested: str, device_type: str,
                     capability: tuple[int, int] | None = None) -> str:
    """The compute precision for inference on a device.

    ``auto``: bf16 on GPUs of compute capability 8.0 and newer (A100, L4, H100...), fp16
    autocast on older ones (T4 7.5, V100 7.0, P100 6.0: bf16 is emulated or missing there),
    fp32 on the CPU. An explicit ``bf16`` / ``fp16`` / ``fp32`` is taken as it is.
    ``capability`` is the device's (major, minor); read from the GPU when not given.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision={requested!r}: choose one of {list(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device_type != "cuda":
        return "fp32"
    if capability is None:
        import torch

        capability = torch.cuda.get_device_capability()
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def autocast(precision: str, device_type: str):
    """``torch.autocast`` for ``precision`` (off for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, _DTYPES[precision]))


def parse_devices(spec: str | None) -> list[str]:
    """``cuda:0,cuda:1`` (any devices, repeats allowed: ``cpu,cpu`` runs two CPU workers),
    ``auto`` (every visible GPU, else the CPU) or none (one worker on the model's device)."""
    if spec is None or spec == "":
        return []
    if spec == "auto":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    names = [part.strip() for part in spec.split(",")]
    for name in names:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", name):
            raise ConfigError(f"devices={spec!r}: {name!r} is not a device (cpu, cuda, cuda:N)")
    return names


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``9h``, ``30m``, ``1h30m``, ``45s``, ``5400`` (seconds)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                             r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)
        if not text.strip() or match is None or not any(match.groups()):
            raise ConfigError(f"time budget {text!r}: write it as 9h, 90m, 1h30m or seconds")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if not np.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"time budget {text!r}: must be a positive duration")
    return seconds


def split_batches(n_batches: int, n_workers: int) -> list[list[int]]:
    """Batch indices per worker: every ``n_workers``-th batch (batches come longest first, so
    each worker gets a like share of long and short ones)."""
    return [list(range(w, n_batches, n_workers)) for w in range(n_workers)]


@dataclass
class BudgetPlan:
    """What fits a time budget: swap averaging kept or dropped, the ``max_length`` to use, the
    projected seconds, and what was changed (in words)."""

    swap_average: bool
    max_length: int
    projected_s: float
    tokens_per_s: float
    changes: list[str] = field(default_factory=list)


def plan_budget(lengths: np.ndarray, *, tokens_per_s: float, budget_s: float, swap: bool,
                max_length: int, workers: int = 1, margin: float = 0.9,
                min_length: int = 64, fixed_s: float = 0.0) -> BudgetPlan:
    """Fit inference of rows of token ``lengths`` (rendered at ``max_length``) into
    ``budget_s`` seconds at a measured ``tokens_per_s`` per worker, keeping ``margin`` of the
    budget: first drop swap averaging (half the tokens), then lower ``max_length`` (a row's
    tokens become ``min(length, max_length)``, which the renderer's re-allocation keeps
    within), never below ``min_length``. What cannot fit is a :class:`ConfigError` saying the
    projection. ``fixed_s`` is time already spent (the warm-up)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if tokens_per_s <= 0 or not np.isfinite(tokens_per_s):
        raise ValueError("tokens_per_s must be positive")
    rate = tokens_per_s * workers
    available = budget_s * margin - fixed_s

    def seconds(sides: int, length: int) -> float:
        return float(np.minimum(lengths, length).sum()) * sides / rate

    sides = 2 if swap else 1
    projected = seconds(sides, max_length)
    plan = BudgetPlan(swap, max_length, projected, tokens_per_s)
    if projected <= available:
        return plan
    if swap:
        plan.swap_average, sides = False, 1
        plan.projected_s = seconds(1, max_length)
        plan.changes.append(f"swap averaging dropped (projected {hours(projected)} with it)")
        if plan.projected_s <= available:
            return plan
    lo, hi = min(min_length, max_length), max_length
    if seconds(sides, lo) > available:
        raise ConfigError(
            f"the test file does not fit the time budget of {hours(budget_s)}: projected "
            f"{hours(seconds(sides, max_length))} at {tokens_per_s:.0f} tokens/s per worker "
            f"x {workers}, and still {hours(seconds(sides, lo))} at max_length={lo}")
    while hi - lo > 1:  # largest max_length that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if seconds(sides, mid) <= available else (lo, mid)
    plan.changes.append(f"max_length lowered from {max_length} to {lo} (projected "
                        f"{hours(plan.projected_s)} at {max_length})")
    plan.max_length, plan.projected_s = lo, seconds(sides, lo)
    return plan


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
