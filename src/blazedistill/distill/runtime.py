"""What a training run needs around the loop: device, processes, seeds, the LR schedule, an EMA, samplers."""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly one-process) distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks cuda (this process's GPU under torchrun), then mps, then cpu; anything else is used as given.

    Raises ValueError (naming the flag) for a string torch cannot parse or a backend this machine lacks."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {name}: not a torch device (try auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_processes(device_name: str) -> Processes:
    """Join the torchrun process group when launched by torchrun (RANK/WORLD_SIZE set); gloo on CPU, nccl on GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        uses_cuda = pick_device(device_name, local_rank).type == "cuda"
        if uses_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if uses_cuda else "gloo")
    return Processes(rank=rank, world_size=world_size, local_rank=local_rank)


def close_processes() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(procs: Processes) -> None:
    if procs.distributed:
        dist.barrier()


def all_finite(value: torch.Tensor, procs: Processes) -> bool:
    """Whether `value` is finite in every process (so all processes stop together)."""
    flag = torch.isfinite(value.detach()).all().float().reshape(1)
    if procs.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *parts: int) -> int:
    """A distinct, reproducible seed for (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine down to `min_ratio` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on conv / linear weights only, not on biases and norm weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ModelEMA:
    """Exponential moving average of a model's weights (buffers copied), with a short warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_value, value in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_value.dtype.is_floating_point:
                ema_value.lerp_(value.detach(), 1 - decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates


class SkipSampler(Sampler):
    """Wraps a sampler and drops its first `skip` indices (to resume in the middle of an epoch)."""

    def __init__(self, sampler: Sampler, skip: int = 0):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)
