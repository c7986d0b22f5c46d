"""The torchrun edge: read the launcher's environment, start and end the process group, shard a model.

Everything else in gptkit learns about other processes only through `training.ranks` (rank, world
size, rank-averaged metrics, DDP wrapping). This module is the single place that reads the torchrun
environment and talks to `torch.distributed` set-up, so a single-process run never touches it.

    torchrun --nproc-per-node 2 -m gptkit pretrain --data corpus/ --out runs/x ...

runs `gptkit pretrain` unchanged on 2 ranks: the CLI enters `distributed_session()`, which sees
WORLD_SIZE and friends, joins the process group (gloo on CPU, NCCL on CUDA), pins each rank to its
GPU, quiets the logs of ranks other than 0, and leaves the group at the end.

Failure: a rank that dies closes its sockets, so the others' next collective fails at once (gloo) or
is aborted by NCCL's error handling; torchrun then stops every worker and exits non-zero. A rank that
hangs without dying is caught by the process-group timeout (`GPTKIT_DIST_TIMEOUT`, seconds).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import GptkitError
from .config import PARALLELS
from .ranks import barrier, is_sharded, rank_info  # noqa: F401  (is_sharded: part of this module's API)

log = logging.getLogger(__name__)

TIMEOUT_ENV = "GPTKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
"""How long a collective may wait for a silent peer before the job fails. Long enough for a slow
checkpoint or evaluation on rank 0 on a busy CPU; a dead peer is detected much sooner (closed sockets)."""


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun (or any launcher using the same variables) tells each process."""

    rank: int
    """RANK: this process's index among all processes of the job, 0..world_size-1."""
    world_size: int
    """WORLD_SIZE: number of processes in the job (nodes x processes per node)."""
    local_rank: int
    """LOCAL_RANK: index on this node; selects the GPU (cuda:LOCAL_RANK)."""
    local_world_size: int
    """LOCAL_WORLD_SIZE: processes on this node."""
    master_addr: str
    """MASTER_ADDR: host of rank 0's rendezvous store."""
    master_port: int
    """MASTER_PORT: its port."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
        """The launch environment, or None when this process was not started by a launcher."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ and "RANK" not in environ:
            return None

        def integer(name: str, default: int | None = None) -> int:
            raw = environ.get(name)
            if raw is None:
                if default is None:
                    raise GptkitError(f"environment variable {name} is missing (set by torchrun with RANK and WORLD_SIZE)")
                return default
            try:
                return int(raw)
            except ValueError:
                raise GptkitError(f"environment variable {name}={raw!r} is not an integer") from None

        world_size = integer("WORLD_SIZE")
        rank = integer("RANK")
        local_rank = integer("LOCAL_RANK", rank)
        env = cls(
            rank=rank,
            world_size=world_size,
            local_rank=local_rank,
            local_world_size=integer("LOCAL_WORLD_SIZE", world_size),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=integer("MASTER_PORT", 29500),
        )
        if world_size < 1 or not 0 <= rank < world_size:
            raise GptkitError(f"environment: RANK={rank} must be in [0, WORLD_SIZE={world_size})")
        if not 0 <= local_rank < env.local_world_size:
            raise GptkitError(f"environment: LOCAL_RANK={local_rank} must be in [0, LOCAL_WORLD_SIZE={env.local_world_size})")
        return env


def timeout_from_env(environ: Mapping[str, str] | None = None) -> timedelta:
    environ = os.environ if environ is None else environ
    raw = environ.get(TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise GptkitError(f"environment variable {TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not seconds > 0:
        raise GptkitError(f"environment variable {TIMEOUT_ENV}={raw!r} must be positive")
    return timedelta(seconds=seconds)


def default_backend() -> str:
    """NCCL when this process can use a GPU, gloo otherwise (CPU training, tests)."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_process_group(env: LaunchEnv, *, backend: str | None = None, timeout: timedelta | None = None) -> str:
    """Join the job's process group (rendezvous through MASTER_ADDR:MASTER_PORT). Returns the backend.

    On CUDA the rank is pinned to cuda:LOCAL_RANK first, so "cuda" everywhere else in the code means
    this rank's own GPU and NCCL does not put every rank's context on GPU 0."""
    if not dist.is_available():
        raise GptkitError("this torch build has no torch.distributed; cannot run under torchrun")
    backend = backend or default_backend()
    if backend == "nccl":
        if env.local_rank >= torch.cuda.device_count():
            raise GptkitError(f"LOCAL_RANK={env.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                              f"use --nproc-per-node <= the GPU count")
        torch.cuda.set_device(env.local_rank)
    timeout = timeout or timeout_from_env()
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout)
    log.debug("rank %d/%d joined the %s process group (timeout %s)", env.rank, env.world_size, backend, timeout)
    return backend


@contextlib.contextmanager
def distributed_session(
    environ: Mapping[str, str] | None = None,
    *,
    backend: str | None = None,
    quiet_other_ranks: bool = True,
) -> Iterator[LaunchEnv | None]:
    """Run the enclosed code as one rank of a torchrun job, or as a plain process when not launched.

    Yields the launch environment (None outside a launcher). Ranks other than 0 log warnings and
    errors only. On a clean exit every rank meets at a barrier and leaves the group; on an exception
    the group is left without a barrier (the peers may be gone) and the exception propagates, so
    this process exits non-zero and torchrun stops the rest of the job.
    """
    env = LaunchEnv.from_env(environ)
    if env is None or dist.is_initialized():
        yield env
        return
    init_process_group(env, backend=backend)
    root = logging.getLogger()
    previous_level = root.level
    if quiet_other_ranks and env.rank != 0:
        root.setLevel(max(previous_level, logging.WARNING))
    ok = False
    try:
        yield env
        ok = True
    finally:
        root.setLevel(previous_level)
        if ok:
            barrier()
            # Free the run's DDP/FSDP wrappers (reference cycles) now, while the group and the
            # interpreter are alive: a reducer still holding gloo work at interpreter teardown can
            # abort the process after a finished run (seen once in CI: rank 1 exited -6 after its last step).
            gc.collect()
        try:
            dist.destroy_process_group()
        except Exception as e:  # leaving after a peer died must not mask the real error
            if ok:
                log.warning("rank %d: leaving the process group failed: %s", env.rank, e)


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs and writes files."""
    return rank_info().is_main


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache), then the others run it and find the result."""
    main = is_main_process()
    if not main:
        barrier()
    try:
        yield
    finally:
        if main:
            barrier()




def shard_model(model: nn.Module, *, reshard_after_forward: bool = True, precision: str = "fp32") -> nn.Module:
    """FSDP (torch's `fully_shard`, FSDP2): each Transformer block, then the root, gets its parameters
    sharded across ranks, so a model too large for one device trains on several.

    Call before building the optimizer: sharding replaces the parameters by sharded DTensors, and the
    optimizer must hold those. Gradients are reduce-scattered in backward; a DDP wrapper is not
    needed (and `training.ranks.wrap_for_training` leaves an already-sharded model alone).
    precision 'bf16': torch's MixedPrecisionPolicy gathers the parameters in bf16 for forward and
    backward and reduces gradients in fp32; the sharded master weights and AdamW state stay fp32.
    Checkpoints of a sharded model are written by every rank (`training.sharded`)."""
    if not dist.is_initialized():
        raise GptkitError("FSDP needs a process group: launch with torchrun")
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6 kept it under _composable
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    from .sharded import keep_export_twin

    keep_export_twin(model)  # rank 0 writes HF exports from a gathered copy of this structure
    mp = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)} \
        if precision == "bf16" else {}
    # Every Transformer block is its own unit (gathered just before it runs, freed after): found as
    # the children of any ModuleList named `blocks`, so a task model (GPT + head) shards the same way.
    modules = dict(model.named_modules())
    trunks = []
    for name, child in modules.items():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block, reshard_after_forward=reshard_after_forward, **mp)
            trunks.append(modules[name.rpartition(".")[0]])
    # The trunk holding the blocks (embeddings, final norm) is a unit of its own, so that calling it
    # directly (evaluation: hidden states, then the tied LM head) gathers its weights; it and the
    # root (task heads) stay gathered from forward to backward, because the tied embedding is used
    # again after the forward pass returned (the LM head on the hidden states, fine-tuning's
    # auxiliary loss).
    for trunk in trunks:
        if trunk is not model:
            fully_shard(trunk, reshard_after_forward=False, **mp)
    fully_shard(model, reshard_after_forward=False, **mp)
    return model


def apply_parallelism(model: nn.Module, parallel: str, *, precision: str = "fp32") -> nn.Module:
    """What `--parallel` asks for, applied to a freshly built model (before its optimizer is made).

    'ddp' (default): nothing here; the loop wraps the model in DistributedDataParallel when there are
    several ranks. 'fsdp': `shard_model`. Outside torchrun (one process) both are the plain model."""
    if parallel not in PARALLELS:
        raise GptkitError(f"--parallel {parallel!r}: choose one of {', '.join(PARALLELS)}")
    if parallel == "fsdp":
        if not dist.is_initialized():
            log.warning("--parallel fsdp in a single process (not under torchrun): nothing to shard, plain training")
            return model
        return shard_model(model, precision=precision)
    return model
