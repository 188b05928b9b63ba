"""The training loop: soft-target loss, AdamW with a head learning rate, warm-up + cosine,
gradient accumulation, bf16 autocast, checkpoints every N steps and resume after a kill.

One process trains on its device. Under ``accelerate launch`` (several processes) the module and
optimizer go through ``Accelerator.prepare`` (DDP, or FSDP when the launch config says so); each
process takes every ``world``-th batch, and only the main process writes checkpoints.

A checkpoint is a folder ``checkpoints/step_NNNNNN`` written under a temporary name and renamed
into place, so a kill leaves either a complete checkpoint or none: the trainable weights
(safetensors), the optimizer and scheduler state, the RNG state and the step. The batch order is
a function of the seed and the epoch, so a resumed run sees the same batches, with the same
dropout masks, as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prefpred.io import write_json_atomic

#: Called after every optimizer step with the step number (tests simulate a kill through it).
_after_step: Callable[[int], None] | None = None


@dataclass
class TrainData:
    """Micro-batches for training: which pairs, per epoch, and how to turn them into tensors."""

    batches_for_epoch: Callable[[int], list[np.ndarray]]
    collate: Callable[[np.ndarray], dict[str, Any]]  # -> inputs (dict), targets, weights


@dataclass
class TrainLog:
    total_steps: int
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)
    #: trained under FSDP: the module's own parameters are shards; the full trained weights are
    #: in the final checkpoint (see ``BackboneModel``, which reloads them)
    sharded: bool = False

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else float("nan")


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor,
                     weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean KL(targets || softmax(logits)): cross-entropy for one-hot targets, and
    distillation / pseudo-label training for soft ones. A target of -1 marks a class the
    judgment did not offer (:func:`prefpred.targets.encode`): the softmax runs over the other
    classes, so a two-class row is scored by P(A) / (P(A) + P(B))."""
    t = targets.float()
    allowed = t >= 0
    t = t.clamp(min=0)
    logp = torch.log_softmax(logits.float().masked_fill(~allowed, -1e4), dim=-1)
    kl = (torch.xlogy(t, t) - t * logp).sum(-1)
    w = weights.float()
    return (kl * w).sum() / w.sum().clamp(min=1e-12)


def _micro_batches(data: TrainData, epochs: float, rank: int, world: int
                   ) -> tuple[list[tuple[int, int]], Callable[[int], list[np.ndarray]]]:
    """(epoch, position) of every micro-batch this process runs, and its batches per epoch."""
    cache: dict[int, list[np.ndarray]] = {}

    def local(epoch: int) -> list[np.ndarray]:
        if epoch not in cache:
            batches = data.batches_for_epoch(epoch)
            n_local = len(batches) // world
            cache.clear()
            cache[epoch] = batches[rank::world][:n_local]
        return cache[epoch]

    plan: list[tuple[int, int]] = []
    full = int(math.floor(epochs))
    for e in range(full):
        plan += [(e, i) for i in range(len(local(e)))]
    frac = epochs - full
    if frac > 1e-9:
        n = len(local(full))
        plan += [(full, i) for i in range(int(math.ceil(frac * n)))]
    return plan, local


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir() and (p / "state.json").exists())


def _readable_checkpoint(path: Path) -> bool:
    """Every file of a checkpoint reads back (a truncated or edited one is not resumed from)."""
    from safetensors.torch import load_file

    load_file(str(path / "trainable.safetensors"))
    if (path / "optimizer.pt").exists():
        torch.load(path / "optimizer.pt", weights_only=True)
    torch.load(path / "rng.pt", weights_only=True)
    json.loads((path / "scheduler.json").read_text())
    int(json.loads((path / "state.json").read_text())["step"])
    return True


def latest_checkpoint(ckpt_dir: Path, run_key: str) -> Path | None:
    """The newest complete, readable checkpoint written by a run with this key (an unreadable
    one is skipped with one line saying so)."""
    from prefpred.io import read_back

    for path in reversed(_checkpoints(ckpt_dir)):
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if state.get("key") == run_key and read_back(path, _readable_checkpoint,
                                                     "the checkpoint") is not None:
            return path
    return None


def _scheduler_state(scheduler) -> dict[str, Any]:
    state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    return json.loads(json.dumps(state, default=float))


def save_checkpoint(ckpt_dir: Path, step: int, run_key: str, weights: dict[str, torch.Tensor],
                    optimizer, scheduler, keep: int) -> Path:
    """Write a checkpoint (``optimizer=None``: without the optimizer state, as under FSDP)."""
    from safetensors.torch import save_file

    final = ckpt_dir / f"step_{step:06d}"
    tmp = ckpt_dir / f".step_{step:06d}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
              str(tmp / "trainable.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / "rng.pt")
    write_json_atomic(tmp / "scheduler.json", _scheduler_state(scheduler))
    write_json_atomic(tmp / "state.json", {"step": step, "key": run_key})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint_weights(path: Path, module: nn.Module) -> None:
    from safetensors.torch import load_file

    from prefpred.models.backbone.network import load_trainable_state

    load_trainable_state(module, load_file(str(path / "trainable.safetensors")))


def load_checkpoint_state(path: Path, optimizer, scheduler) -> int:
    """Optimizer (when saved), scheduler and RNG state; returns the step."""
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    sched = json.loads((path / "scheduler.json").read_text())
    sched["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    scheduler.load_state_dict(sched)
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(json.loads((path / "state.json").read_text())["step"])


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Every tensor of a batch on ``device``, the model inputs (a nested dict) included."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
            else _to_device(v, device) if isinstance(v, dict) else v
            for k, v in batch.items()}


def train(module: nn.Module, param_groups: list[dict[str, Any]], data: TrainData, *,
          epochs: float, max_steps: int | None, grad_accum: int, warmup_ratio: float,
          max_grad_norm: float, bf16: bool, device: torch.device,
          checkpoint_dir: Path | None, checkpoint_every: int, keep_checkpoints: int,
          run_key: str, progress: bool = True, desc: str = "train") -> TrainLog:
    """Train ``module`` in place; resume from the newest matching checkpoint in
    ``checkpoint_dir``. Returns the loss history of the steps run here."""
    from transformers import get_cosine_schedule_with_warmup

    from prefpred.models.backbone.network import distributed_state

    state = distributed_state()
    world, rank = state.num_processes, state.process_index
    plan, local = _micro_batches(data, epochs, rank, world)
    total_steps = math.ceil(len(plan) / grad_accum)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    log = TrainLog(total_steps)
    if total_steps == 0:
        return log
    optimizer = torch.optim.AdamW([g for g in param_groups if g["params"]])
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)),
                                                total_steps)
    from prefpred.models.backbone.network import trainable_state

    raw_module = module
    found = latest_checkpoint(checkpoint_dir, run_key) if checkpoint_dir is not None else None
    if found is not None:  # weights before any wrapping: DDP broadcasts them, FSDP shards them
        load_checkpoint_weights(found, raw_module)
    backward: Callable[[torch.Tensor], None] = lambda loss: loss.backward()  # noqa: E731
    clip = torch.nn.utils.clip_grad_norm_
    no_sync: Callable[[nn.Module], Any] = lambda m: contextlib.nullcontext()  # noqa: E731
    weights: Callable[[], dict[str, torch.Tensor]] = lambda: trainable_state(raw_module)  # noqa: E731
    if world > 1:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        accelerator = Accelerator(cpu=device.type == "cpu")
        module, optimizer = accelerator.prepare(module, optimizer)
        backward, clip, no_sync = accelerator.backward, accelerator.clip_grad_norm_, \
            accelerator.no_sync
        if accelerator.distributed_type == DistributedType.FSDP:
            if checkpoint_dir is None:
                from prefpred.errors import ConfigError

                raise ConfigError("FSDP training needs a work folder (the CV runner and submit "
                                  "give one) to gather the trained weights in")
            names = {n for n, p in raw_module.named_parameters() if p.requires_grad}
            log.sharded = True
            checkpoint_every = checkpoint_every or total_steps

            def weights() -> dict[str, torch.Tensor]:  # collective: every process calls it
                full = accelerator.get_state_dict(module)
                return {k: v for k, v in full.items() if k in names}

    start = 0
    if found is not None:
        start = load_checkpoint_state(found, None if log.sharded else optimizer, scheduler)
        log.resumed_from = start
    if start >= total_steps:
        return log

    trainable = [p for g in param_groups for p in g["params"]]
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    module.train()
    micro: Iterator[tuple[int, int]] = iter(plan[start * grad_accum:])
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start, desc=desc,
               disable=True if (not progress or rank != 0) else None,  # None: off without a TTY
               leave=False, dynamic_ncols=True)
    try:
        for step in range(start, total_steps):
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            chunk = [mb for _, mb in zip(range(grad_accum), micro, strict=False)]
            for j, (epoch, pos) in enumerate(chunk):
                batch = _to_device(data.collate(local(epoch)[pos]), device)
                sync = j == len(chunk) - 1
                with (contextlib.nullcontext() if sync else no_sync(module)), autocast:
                    logits = module(**batch["inputs"])
                    loss = soft_target_loss(logits, batch["targets"], batch["weights"])
                backward(loss / len(chunk))
                step_loss += float(loss.detach()) / len(chunk)
            if max_grad_norm > 0:
                clip(trainable, max_grad_norm)
            optimizer.step()
            scheduler.step()
            log.losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            done = step + 1
            if checkpoint_dir is not None and checkpoint_every and (
                    done % checkpoint_every == 0 or done == total_steps):
                state_now = weights()
                if state.is_main_process:
                    save_checkpoint(checkpoint_dir, done, run_key, state_now,
                                    None if log.sharded else optimizer, scheduler,
                                    keep_checkpoints)
                state.wait_for_everyone()
            if _after_step is not None:
                _after_step(done)
    finally:
        bar.close()
    module.eval()
    return log
