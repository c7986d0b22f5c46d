"""Starting a run: seeding a fresh one, or restoring everything a checkpoint holds into the
module, optimizer, batch source and RNGs (the loop's resume path), and the default model I/O of a
checkpoint for modules that bring none."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GptkitError
from .checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    Checkpoint,
    optimizer_state_from_safetensors,
    rng_state_from_safetensors,
)
from .config import TrainConfig
from .ranks import RankInfo, is_sharded
from .sharded import is_sharded_checkpoint, load_shards, reseed_new_ranks

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def restore(checkpoint: Checkpoint, config: TrainConfig, ranks: RankInfo, load_model: Callable[[Path], None],
             optimizer: torch.optim.Optimizer, batches: Any, module: nn.Module) -> tuple[int, int, dict | None]:
    """Load a checkpoint written by any number of processes (`config` already fitted to keep its
    global batch: `sharded.fit_world_size`)."""
    state, path = checkpoint.state, checkpoint.path
    same_world = state.get("world_size", 1) == ranks.world_size
    saved_cfg = state.get("config", {})
    for key in ("grad_accum_steps", "precision", "seed"):
        if same_world and key in saved_cfg and saved_cfg[key] != getattr(config, key):
            log.warning("resuming with %s=%r (the checkpoint used %r): the run will not match an "
                        "uninterrupted one", key, getattr(config, key), saved_cfg[key])
    if is_sharded_checkpoint(path):  # DCP shards: any world size, into a sharded or a plain model
        load_shards(path, module, optimizer, state["optimizer"])
    elif is_sharded(module):
        raise GptkitError(f"{path}: written by a DDP or single-process run; resume it without FSDP "
                          f"(--parallel ddp), or start the FSDP run afresh")
    else:
        load_model(path)
        optimizer_state_from_safetensors(optimizer, checkpoint.tensors(OPTIMIZER_FILE), state["optimizer"], path)
    per_rank = state.get("batches_per_rank")
    if "batches" not in state or "rng" not in state:
        raise GptkitError(f"{path / STATE_FILE}: missing field {'batches' if 'batches' not in state else 'rng'!r}; "
                          f"not a checkpoint of the training loop")
    try:  # the batch source's own checks name the setting, this names the file
        batches.load_state_dict(per_rank[ranks.rank] if same_world and per_rank else state["batches"])
    except GptkitError as e:
        raise GptkitError(f"{path / STATE_FILE}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise GptkitError(f"{path / STATE_FILE}: field batches is malformed ({type(e).__name__}: {e})") from None
    rng_tensors = checkpoint.tensors(RNG_FILE)
    try:
        rng_state_from_safetensors(rng_tensors, state["rng"], ranks.rank)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GptkitError(f"{path / RNG_FILE}: not the RNG states this checkpoint's {STATE_FILE} describes "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not same_world:
        reseed_new_ranks(state, config, ranks)
    return int(state["step"]), int(state.get("tokens_seen", 0)), state.get("best")


def warn_if_schedule_changed(checkpoint: Checkpoint, schedule: Callable[[int], float], step: int) -> None:
    """A resume with another schedule (pre-training resumed with another --steps re-plans its cosine
    for the new total, and a left-out --warmup follows it) does not continue the run that was started:
    the learning rate jumps at the step resumed from. Allowed, as extending a run is a real need, but
    said, with the jump (measured: 10 steps extended to 20 went from 8e-06 at step 10 to 1.5e-04)."""
    from .schedules import from_dict

    saved = checkpoint.state.get("schedule")
    now = schedule.to_dict() if hasattr(schedule, "to_dict") else repr(schedule)
    if saved is None or saved == now:
        return
    before = from_dict(saved)
    was = f"{before(step):.3g}" if before is not None else "another value"
    log.warning("%s: resuming with another learning-rate schedule (%s; the run's: %s): update %d runs at lr "
                "%.3g instead of %s, so this is not the run that was started", checkpoint.path,
                _describe(now), _describe(saved), step + 1, schedule(step), was)


def _describe(schedule: Any) -> str:
    if isinstance(schedule, dict):
        return f"{schedule.get('name')}(" + ", ".join(f"{k}={v}" for k, v in sorted(schedule.items()) if k != "name") + ")"
    return str(schedule)


def state_dict_io(module: nn.Module) -> tuple[Callable[[Path], None], Callable[[Path], None]]:
    """Default model I/O: the module's parameters and buffers in one safetensors file (safetensors'
    save_model/load_model handle tied weights)."""
    from safetensors.torch import load_model, save_model

    def save(directory: Path) -> None:
        save_model(module, str(Path(directory) / "module.safetensors"))

    def load(directory: Path) -> None:
        path = Path(directory) / "module.safetensors"
        if not path.is_file():
            raise GptkitError(f"{path}: missing from the checkpoint")
        load_model(module, str(path), strict=True)

    return save, load
