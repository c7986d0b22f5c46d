"""Sharded checkpoints of FSDP runs (torch.distributed.checkpoint), and resuming at another world size.

An FSDP-sharded model's parameters and AdamW moments are spread over the ranks, so no single rank can
write them. Every rank writes its own shard in parallel with `torch.distributed.checkpoint` (DCP),
through DCP's safetensors storage (`HuggingFaceStorageWriter(save_distributed=True)`): each rank's
file carries the offsets of its pieces in the safetensors header, so reading needs no pickled
metadata and an untrusted checkpoint cannot execute code. DCP's default `.metadata` file is a pickle,
which gptkit does not write or read.

A sharded checkpoint is an ordinary checkpoint directory plus `sharded/` (one safetensors file per
rank, model and optimizer state under their fully qualified names), written into the same temporary
directory and committed by the same rename: it counts only once rank 0 has written
`trainer_state.json` after every rank's shard landed (the rename makes it a `step_*`). The model is
also gathered to rank 0 and written as the usual model directory (config.json, model.safetensors,
tokenizer), so every checkpoint, sharded or not, loads in transformers.

Resharding: DCP reads whichever pieces of the saved tensors the current layout needs, so a checkpoint
written by N ranks loads on M ranks, FSDP-sharded or a plain model in one process. The loop keeps the
global batch (micro-batch x accumulation x ranks) by changing the accumulation, and the data samplers
continue from the global position.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import GptkitError
from .checkpoint import SHARDED_DIR, CheckpointManager, step_dir_name
from .config import TrainConfig
from .ranks import RankInfo, barrier, rank_info

log = logging.getLogger(__name__)

_TWINS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
"""Rank 0's unsharded copy (on the meta device, no memory) of each sharded model, for exports."""
_GATHERED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
"""The twins that hold a gathered full state right now (inside `gathered`)."""


def keep_export_twin(model: nn.Module) -> None:
    """Called before sharding: rank 0 keeps a weightless copy of the model's structure, which
    `gathered` later fills with the full state so the recipes' writers (save_pretrained, task model
    directories) work on it unchanged."""
    if rank_info().is_main:
        _TWINS[model] = _meta_copy(model)


def export_view(model: nn.Module) -> nn.Module:
    """The module a writer should save: the model itself, or, for a sharded model while its state is
    gathered on rank 0, the full unsharded copy."""
    return _GATHERED.get(model, model)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Collective (every rank enters): gather the sharded model's full state onto rank 0's CPU, where
    `export_view(model)` returns a complete plain copy inside the block."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    twin = _TWINS.get(model) if rank_info().is_main else None
    if twin is None:
        yield
        return
    twin.load_state_dict(full, strict=True, assign=True)
    _GATHERED[model] = twin
    try:
        yield
    finally:
        del _GATHERED[model]
        twin.to("meta")  # give the gathered memory back


def _meta_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")


# --- DCP shards -------------------------------------------------------------------------------------


def is_sharded_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / SHARDED_DIR).is_dir()


def _dcp_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[dict]]:
    """Model and optimizer state keyed by parameter names (DTensors under FSDP, plain tensors otherwise),
    and the optimizer's param groups (hyper-parameters; JSON in trainer_state.json)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)
    return {"model": model_sd, "optim": optim_sd["state"]}, optim_sd["param_groups"]


def save_shards(directory: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: every rank writes its part of the model and optimizer state to directory/sharded
    (fsynced). Returns the JSON part of the optimizer state (its param groups)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    state, groups = _dcp_state(module, optimizer)
    dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(Path(directory) / SHARDED_DIR), save_distributed=True))
    return {"param_groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in groups],
            "sharded": True}


def load_shards(checkpoint: Path, module: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Load a sharded checkpoint into `module` and `optimizer`, whatever the number of ranks now (DCP
    reads the pieces this rank's layout needs)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import set_state_dict

    shards = Path(checkpoint) / SHARDED_DIR
    state, _ = _dcp_state(module, optimizer)  # templates: shapes and placements of this run
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    try:
        with warnings.catch_warnings():  # DCP warns that one process reads alone: that is the point here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=HuggingFaceStorageReader(str(shards)))
        set_state_dict(module, optimizer, model_state_dict=state["model"],
                       optim_state_dict={"state": state["optim"], "param_groups": groups})
    except (RuntimeError, ValueError, KeyError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GptkitError(f"{shards}: the sharded state does not fit this model and optimizer ({first})") from None


def save_sharded_checkpoint(
    ckpt: CheckpointManager,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    write_model: Callable[[Path], None],
    state: dict[str, Any] | None,
    tensor_files: dict[str, dict[str, torch.Tensor]] | None,
    *,
    is_best: bool = False,
) -> Path | None:
    """Collective: write one sharded checkpoint. Every rank writes its DCP shard into the temporary
    directory, the full model is gathered to rank 0, and rank 0 commits (model files, its state files,
    trainer_state.json last, rename) through `CheckpointManager.save`. `state` and `tensor_files`
    (the per-rank RNG states) matter on rank 0 only. Returns the path on rank 0, None elsewhere."""
    main = rank_info().is_main
    tmp = ckpt.dir / f".tmp-{step_dir_name(step)}-sharded"  # one name every rank agrees on
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    opt_meta = save_shards(tmp, module, optimizer)
    path = None
    with gathered(module):
        if main:
            path = ckpt.save(step, write_model, {**(state or {}), "optimizer": opt_meta}, tensor_files or {},
                             is_best=is_best, tmp=tmp)
    barrier()
    return path


# --- another world size -----------------------------------------------------------------------------


def fit_world_size(state: dict[str, Any], config: TrainConfig, ranks: RankInfo, source: Path) -> TrainConfig:
    """The config to resume with: at another world size, the accumulation that keeps the checkpoint's
    global batch (micro-batches per update = accumulation x ranks), so the run continues with the same
    updates on the same windows."""
    saved_world = int(state.get("world_size", 1))
    if saved_world == ranks.world_size:
        return config
    saved_accum = int(state.get("config", {}).get("grad_accum_steps", config.grad_accum_steps))
    micro_per_update = saved_world * saved_accum
    if micro_per_update % ranks.world_size:
        raise GptkitError(f"{source}: written by {saved_world} process(es) x {saved_accum} accumulation step(s) = "
                          f"{micro_per_update} micro-batches per update, which {ranks.world_size} process(es) cannot "
                          f"split evenly; resume with a world size dividing {micro_per_update}")
    accum = micro_per_update // ranks.world_size
    if accum != config.grad_accum_steps:
        log.warning("resuming a %d-process run with %d: gradient accumulation %d -> %d keeps the global batch",
                    saved_world, ranks.world_size, config.grad_accum_steps, accum)
    return config.replace(grad_accum_steps=accum)


def reseed_new_ranks(state: dict[str, Any], config: TrainConfig, ranks: RankInfo) -> None:
    """A rank the checkpoint had no RNG state for (more ranks than before) gets its own seed, derived
    from the run's seed, its rank and the step, rather than a copy of rank 0's dropout stream."""
    if ranks.rank >= int(state.get("world_size", 1)):
        torch.manual_seed((config.seed * 1_000_003 + ranks.rank * 7919 + int(state["step"])) % 2**63)
