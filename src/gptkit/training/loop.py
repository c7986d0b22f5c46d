"""THE training loop: pre-training, fine-tuning and the demo all run through `train()`.

It knows nothing about GPT. The caller supplies the module to optimise, an objective
`(module, batch) -> (loss, metrics)`, a resumable batch source, an optimizer, a schedule
`lr_at(step)`, and how to save/load the model part of a checkpoint. The loop adds what every run
needs: gradient accumulation, clipping, bf16 (training/precision.py), torch.compile, a non-finite guard that stops
before the update, periodic evaluation with a best checkpoint, atomic checkpoints with exact resume,
SIGTERM/SIGINT handling, metrics logs, a progress bar with tokens/s and MFU, and the DDP edge
(rank-0-only writes, rank-averaged metrics, no all-reduce on accumulation micro-steps).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import GptkitError
from .checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    CheckpointManager,
    optimizer_state_from_safetensors,
    optimizer_state_to_safetensors,
    rng_state_from_safetensors,
    rng_state_to_safetensors,
)
from .config import TrainConfig
from .metrics import MetricsLog
from .objectives import Objective
from .optimizer import set_lr
from .perf import measure_matmul_flops, mfu
from .precision import precision_for_run
from .ranks import (
    RankInfo,
    any_across_ranks,
    barrier,
    gather_tensors,
    maybe_no_sync,
    mean_across_ranks,
    rank_info,
    wrap_for_training,
)
from .signals import StopRequest

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Where batches come from. Resumable: `state_dict()` must be JSON-serialisable and, loaded into
    a fresh source, make `next_batch()` return exactly the batches that would have come next.
    An epoch-based source (fine-tuning) simply starts its next epoch when one ends."""

    def next_batch(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteError(GptkitError):
    """The loss or the gradient norm became NaN/inf; the update was not applied."""


@dataclass
class TrainResult:
    step: int
    """Updates done when the loop returned."""
    stopped_by: str | None
    """None when max_steps was reached; the signal's name (SIGTERM, SIGINT) when stopped early."""
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_value: float | None
    last_eval: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every metrics record the loop wrote (rank 0), train and eval lines."""


def train(
    module: nn.Module,
    objective: Objective,
    batches: BatchSource,
    optimizer: torch.optim.Optimizer,
    schedule: Callable[[int], float],
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    save_model: Callable[[Path], None] | None = None,
    load_model: Callable[[Path], None] | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    extra_state: dict[str, Any] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Optimise `module` for `config.max_steps` updates (continuing from `resume_from`, if given).

    save_model(directory) / load_model(directory): write / read the model part of a checkpoint
        (default: the module's state in `module.safetensors`). Pre-training writes an HF directory
        with the tokenizer; fine-tuning adds its head and task.json.
    evaluate(module) -> metrics: called in eval mode without gradients every `config.eval_every`
        steps and at the end; with `config.best_metric` the best checkpoint by it is kept.
    flops_per_token / peak_flops: for MFU (peak measured by a matmul probe when not given).
    on_step(step, metrics): called after every update on every rank (tests, custom logging).
    """
    ranks = rank_info()
    main = ranks.is_main
    device = torch.device(config.device)
    module.to(device)
    config, precision = precision_for_run(config, module, device, resume_from)  # resolves "auto"
    ckpt = CheckpointManager(run_dir, config.keep_last) if run_dir is not None else None
    if ckpt is not None and ranks.world_size > 1:
        from .distributed import is_sharded

        if is_sharded(module):  # its state is spread over the ranks; rank 0 alone cannot write it
            raise GptkitError("checkpoints of an FSDP-sharded model are not supported yet: train it with "
                              "run_dir=None and gather its state yourself, or use DDP")
    if save_model is None or load_model is None:
        default_save, default_load = _state_dict_io(module)
        save_model, load_model = save_model or default_save, load_model or default_load
    metrics_log = MetricsLog(run_dir if main else None)
    result = TrainResult(step=0, stopped_by=None, last_checkpoint=None, best_checkpoint=None, best_value=None)

    step, tokens_seen = 0, 0
    best: dict[str, Any] | None = None
    if resume_from is not None:
        step, tokens_seen, best = _restore(Path(resume_from), config, ranks, load_model, optimizer, batches)
        metrics_log.truncate_after(step)
        result.last_checkpoint = Path(resume_from)
        log.info("resumed from %s at step %d", resume_from, step)
    else:
        seed_everything(config.seed)
    if ckpt is not None and main:
        ckpt.clean_stale()
        result.best_checkpoint = ckpt.best()
    if best is not None:
        result.best_value = best["value"]

    if flops_per_token and peak_flops is None:
        dtype = precision.dtype
        peak_flops = measure_matmul_flops(device, dtype)
        log.info("peak %s matmul on %s: %.1f GFLOP/s (MFU is measured against this)", dtype, device, peak_flops / 1e9)

    train_module = wrap_for_training(module, device)
    run_module = torch.compile(train_module) if config.compile else train_module
    params = [p for p in module.parameters() if p.requires_grad]
    clip = config.grad_clip if config.grad_clip else float("inf")

    def save(is_best: bool = False) -> Path | None:
        nonlocal best
        if ckpt is None:
            return None
        path = None
        per_rank = None
        if ranks.world_size > 1:  # a collective: every rank takes part, rank 0 writes
            per_rank = {"torch": gather_tensors(torch.get_rng_state())}
            if device.type == "cuda":
                per_rank["cuda"] = gather_tensors(torch.cuda.get_rng_state(device))
        if main:
            opt_tensors, opt_meta = optimizer_state_to_safetensors(optimizer)
            rng_tensors, rng_meta = rng_state_to_safetensors(per_rank)
            state = {
                "step": step, "tokens_seen": tokens_seen, "world_size": ranks.world_size,
                "batches": batches.state_dict(), "optimizer": opt_meta, "rng": rng_meta,
                "schedule": schedule.to_dict() if hasattr(schedule, "to_dict") else repr(schedule),
                "config": config.to_dict(), "best": best, "extra": extra_state or {},
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            path = ckpt.save(step, save_model, state, {OPTIMIZER_FILE: opt_tensors, RNG_FILE: rng_tensors},
                             is_best=is_best)
            result.last_checkpoint = path
            if is_best:
                result.best_checkpoint = path
            log.debug("checkpoint %s", path)
        barrier()
        return path

    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=not (main and config.progress and sys.stderr.isatty()))
    window_tokens, window_time = 0, 0.0
    last_saved_step = step if resume_from is not None else -1
    with StopRequest() as stop:
        while step < config.max_steps:
            t_start = time.perf_counter()
            lr = schedule(step)
            set_lr(optimizer, lr)
            module.train()
            loss_sum = torch.zeros((), device=device)
            sums: dict[str, float] = {}
            for micro in range(config.grad_accum_steps):
                batch = _to_device(batches.next_batch(), device)
                with maybe_no_sync(train_module, micro < config.grad_accum_steps - 1), precision.forward():
                    loss, m = objective(run_module, batch)
                (loss / config.grad_accum_steps).backward()
                loss_sum += loss.detach().float()
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            loss_value = float(loss_sum) / config.grad_accum_steps
            bad = not (math.isfinite(loss_value) and math.isfinite(grad_norm))
            if any_across_ranks(bad, device):
                optimizer.zero_grad(set_to_none=True)
                bar.close()
                metrics_log.close()
                where = f"the last good checkpoint, {result.last_checkpoint}, is untouched" if result.last_checkpoint \
                    else "no checkpoint was written"
                raise NonFiniteError(
                    f"step {step + 1}: non-finite {'loss' if not math.isfinite(loss_value) else 'gradient norm'} "
                    f"(loss {loss_value}, grad norm {grad_norm}) at lr {lr:.3g}; stopped before the optimizer "
                    f"update; {where}"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n_tokens = int(sums.pop("tokens", 0)) * ranks.world_size
            tokens_seen += n_tokens
            window_tokens += n_tokens
            window_time += time.perf_counter() - t_start
            bar.update(1)

            step_metrics = {"loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                            **{k: v / config.grad_accum_steps for k, v in sums.items()}}
            if on_step is not None:
                on_step(step, step_metrics)
            if step % config.log_every == 0 or step == config.max_steps or step == 1:
                record = {"step": step, **mean_across_ranks(step_metrics, device), "tokens_seen": tokens_seen}
                if window_time > 0 and window_tokens:
                    record["tokens_per_s"] = window_tokens / window_time
                    if flops_per_token and peak_flops:
                        record["mfu"] = mfu(flops_per_token, record["tokens_per_s"], peak_flops)
                window_tokens, window_time = 0, 0.0
                if main:
                    metrics_log.write(record)
                    result.history.append(record)
                    bar.set_postfix(_postfix(record), refresh=False)

            is_best = False
            if evaluate is not None and ((config.eval_every and step % config.eval_every == 0) or step == config.max_steps):
                module.eval()
                with torch.no_grad(), precision.forward():
                    eval_metrics = mean_across_ranks(dict(evaluate(module)), device)
                module.train()
                result.last_eval = eval_metrics
                record = {"step": step, **eval_metrics}
                if main:
                    metrics_log.write(record)
                    result.history.append(record)
                    log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in eval_metrics.items()))
                if config.best_metric is not None:
                    if config.best_metric not in eval_metrics:
                        raise GptkitError(f"best_metric {config.best_metric!r} is not among the evaluation "
                                          f"metrics {sorted(eval_metrics)}")
                    value = float(eval_metrics[config.best_metric])
                    better = best is None or (value < best["value"] if config.best_mode == "min" else value > best["value"])
                    if better and math.isfinite(value):
                        best = {"metric": config.best_metric, "value": value, "step": step}
                        result.best_value = value
                        is_best = True

            stopping = any_across_ranks(stop.requested, device)
            due = (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps
            if due or stopping or is_best:
                save(is_best)
                last_saved_step = step
            if stopping:
                result.stopped_by = stop.signal_name or "another rank"
                break
    bar.close()
    metrics_log.close()
    if last_saved_step != step and ckpt is not None:  # defensive: never end without the final state
        save()
    result.step = step
    return result


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _restore(path: Path, config: TrainConfig, ranks: RankInfo, load_model: Callable[[Path], None],
             optimizer: torch.optim.Optimizer, batches: BatchSource) -> tuple[int, int, dict | None]:
    state = CheckpointManager.read_state(path)
    saved_world = state.get("world_size", 1)
    if saved_world != ranks.world_size:
        raise GptkitError(f"{path}: written by {saved_world} process(es), resumed with {ranks.world_size}; resume "
                          f"with the same world size (the data order depends on it)")
    saved_cfg = state.get("config", {})
    for key in ("grad_accum_steps", "precision", "seed"):
        if key in saved_cfg and saved_cfg[key] != getattr(config, key):
            log.warning("resuming with %s=%r (the checkpoint used %r): the run will not match an "
                        "uninterrupted one", key, getattr(config, key), saved_cfg[key])
    load_model(path)
    optimizer_state_from_safetensors(optimizer, CheckpointManager.read_tensors(path, OPTIMIZER_FILE),
                                     state["optimizer"], path)
    batches.load_state_dict(state["batches"])
    rng_state_from_safetensors(CheckpointManager.read_tensors(path, RNG_FILE), state["rng"], ranks.rank)
    return int(state["step"]), int(state.get("tokens_seen", 0)), state.get("best")


def _state_dict_io(module: nn.Module) -> tuple[Callable[[Path], None], Callable[[Path], None]]:
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


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (in dicts, lists, tuples) to the device; non_blocking from pinned CPU memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned()) if batch.device != device else batch
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}"}
    if "tokens_per_s" in record:
        out["tok/s"] = f"{record['tokens_per_s']:.0f}"
    if "mfu" in record:
        out["mfu"] = f"{100 * record['mfu']:.1f}%"
    return out
