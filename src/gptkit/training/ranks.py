"""The one place the loop learns whether it is distributed: rank, world size, and rank-averaging.

The loop never reads environment variables itself. When `torch.distributed` is initialised (by
`gptkit.training.distributed` under torchrun), these helpers see it; otherwise they describe a single
process and cost nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, shows progress and writes files."""
        return self.rank == 0


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_info() -> RankInfo:
    if _dist_ready():
        return RankInfo(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return RankInfo(0, 1)


def mean_across_ranks(metrics: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Average each metric over ranks (every rank must pass the same keys in the same order)."""
    if not _dist_ready() or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    values /= torch.distributed.get_world_size()
    return dict(zip(keys, values.tolist()))


def any_across_ranks(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on any (a stop request or a non-finite loss on one rank
    must stop all of them at the same step, or the others hang in the next all-reduce)."""
    if not _dist_ready():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on CPU (used for per-rank RNG states)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return [t]
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else t.device
    local = t.to(device)
    out = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, local)
    return [x.cpu() for x in out]


def gather_json(value: Any) -> list[Any]:
    """Every rank's JSON-serialisable value, in rank order (per-rank data-sampler states)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, json.dumps(value))  # JSON text: nothing but data crosses
    return [json.loads(x) for x in out]


def barrier() -> None:
    if _dist_ready():
        torch.distributed.barrier()


def wrap_for_training(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel when distributed, the module itself otherwise. Gradients are then
    averaged across ranks inside backward(); `no_sync` skips that on accumulation micro-steps."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return module
    if is_sharded(module):  # FSDP (distributed.shard_model) already reduces gradients itself
        return module
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return _TransparentDDP(module, device_ids=device_ids)


class _TransparentDDP(nn.parallel.DistributedDataParallel):
    """DDP whose wrapped module's attributes (a task model's `spec`, `gpt`) read through, as they do
    through torch.compile's wrapper, so objectives never unwrap the module themselves."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside __init__)
                raise
            return getattr(self.module, name)


def is_sharded(module: nn.Module) -> bool:
    """Whether torch's `fully_shard` (FSDP2, `distributed.shard_model`) has been applied to this module."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6 kept it under _composable
        from torch.distributed._composable.fsdp import FSDPModule
    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def maybe_no_sync(module: nn.Module, skip_sync: bool) -> Iterator[None]:
    """Inside DDP's no_sync() for accumulation micro-steps that are not the last of an update."""
    no_sync = getattr(module, "no_sync", None)
    if skip_sync and no_sync is not None:
        with no_sync():
            yield
    else:
        yield
