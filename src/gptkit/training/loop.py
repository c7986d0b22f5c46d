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

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import GptkitError
from .allocator import keep_freed_memory
from .checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    Checkpoint,
    CheckpointManager,
    optimizer_state_to_safetensors,
    read_checkpoint,
    rng_state_to_safetensors,
    step_dir_name,
)
from .config import TrainConfig
from .metrics import MetricsLog
from .objectives import Objective
from .optimizer import set_lr
from .perf import measure_matmul_flops, mfu
from .precision import precision_for_run
from .ranks import (
    any_across_ranks,
    barrier,
    gather_json,
    gather_tensors,
    is_sharded,
    maybe_no_sync,
    mean_across_ranks,
    rank_info,
    wrap_for_training,
)
from .resume import restore, seed_everything, state_dict_io, warn_if_schedule_changed
from .sharded import (
    fit_world_size,
    save_sharded_checkpoint,
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

    # Optional: `count_tokens(batch) -> int`, the tokens a batch trains on (for tokens/s and MFU).


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
    resume_from: str | Path | Checkpoint | None = None,
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
    flops_per_token / peak_flops: for MFU (peak measured by a matmul probe when not given; the probe
        draws nothing from the training RNG, so it changes no result).
    tokens/s counts `batches.count_tokens(batch)` when the batch source has that method.
    on_step(step, metrics): called after every update on every rank (tests, custom logging).
    """
    keep_freed_memory()  # no page faults for the buffers every step re-allocates (allocator.py)
    if save_model is None or load_model is None:
        default_save, default_load = state_dict_io(module)
        save_model, load_model = save_model or default_save, load_model or default_load
    checkpoint = None
    if resume_from is not None:
        checkpoint = resume_from if isinstance(resume_from, Checkpoint) else read_checkpoint(resume_from)
        # another world size: the accumulation that keeps the checkpoint's global batch
        config = fit_world_size(checkpoint.state, config, rank_info(), checkpoint.path)
    saved = checkpoint.state.get("config", {}).get("precision") if checkpoint is not None else None
    # "auto" resolved (timing a step of the batch source's micro-batch shape, when it says one), and said
    config, precision = precision_for_run(config, module, saved, getattr(batches, "step_shape", None))
    trainer = _Trainer(module, objective, batches, optimizer, schedule, config, run_dir=run_dir,
                       save_model=save_model, evaluate=evaluate, extra_state=extra_state or {}, on_step=on_step)
    if checkpoint is not None:
        trainer.restore(checkpoint, load_model)
        warn_if_schedule_changed(checkpoint, schedule, trainer.step)
    else:
        seed_everything(config.seed)
    trainer.precision = precision
    trainer.prepare(flops_per_token, peak_flops)
    return trainer.run()


class _Trainer:
    """The state of one `train()` call and its parts: one update, logging, evaluation, saving."""

    def __init__(self, module: nn.Module, objective: Objective, batches: BatchSource,
                 optimizer: torch.optim.Optimizer, schedule: Callable[[int], float], config: TrainConfig, *,
                 run_dir: str | Path | None, save_model: Callable[[Path], None],
                 evaluate: Callable[[nn.Module], dict[str, float]] | None, extra_state: dict[str, Any],
                 on_step: Callable[[int, dict[str, float]], None] | None) -> None:
        self.module, self.objective, self.batches = module, objective, batches
        self.optimizer, self.schedule, self.config = optimizer, schedule, config
        self.save_model, self.evaluate, self.extra_state, self.on_step = save_model, evaluate, extra_state, on_step
        self.ranks = rank_info()
        self.device = torch.device(config.device)
        module.to(self.device)
        self.ckpt = CheckpointManager(run_dir, config.keep_last) if run_dir is not None else None
        self.sharded = is_sharded(module)  # FSDP: every rank writes its shard of a checkpoint (training.sharded)
        self.metrics_log = MetricsLog(run_dir if self.ranks.is_main else None)
        self.result = TrainResult(step=0, stopped_by=None, last_checkpoint=None, best_checkpoint=None, best_value=None)
        self.step, self.tokens_seen = 0, 0
        self.best: dict[str, Any] | None = None
        self.last_saved_step = -1
        self.count_tokens: Callable[[Any], int] | None = getattr(batches, "count_tokens", None)
        self.flops_per_token: float | None = None
        self.peak_flops: float | None = None

    # --- start ------------------------------------------------------------------------------------

    def restore(self, checkpoint: Checkpoint, load_model: Callable[[Path], None]) -> None:
        self.step, self.tokens_seen, self.best = restore(checkpoint, self.config, self.ranks, load_model,
                                                          self.optimizer, self.batches, self.module)
        self.metrics_log.truncate_after(self.step)
        self.result.last_checkpoint = checkpoint.path
        self.result.best_value = self.best["value"] if self.best is not None else None
        self.last_saved_step = self.step
        log.info("resumed from %s at step %d", checkpoint.path, self.step)

    def prepare(self, flops_per_token: float | None, peak_flops: float | None) -> None:
        """Clean up after a killed predecessor, measure the peak for MFU, wrap the module."""
        if self.ckpt is not None and self.ranks.is_main:
            self.ckpt.clean_stale()
            self.result.best_checkpoint = self.ckpt.best()
        if flops_per_token and peak_flops is None:
            dtype = self.precision.dtype
            peak_flops = measure_matmul_flops(self.device, dtype)
            log.info("peak %s matmul on %s: %.1f GFLOP/s (MFU is measured against this)", dtype, self.device,
                     peak_flops / 1e9)
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.train_module = wrap_for_training(self.module, self.device)
        self.run_module = torch.compile(self.train_module) if self.config.compile else self.train_module
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass in the run's precision (training/precision.py: bf16 weight casts)."""
        return self.precision.forward()

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, main = self.config, self.ranks.is_main
        self.bar = tqdm(total=config.max_steps, initial=self.step, unit="step", dynamic_ncols=True, file=sys.stderr,
                        disable=not (main and config.progress and sys.stderr.isatty()))
        self.window_tokens, self.window_time = 0, 0.0
        try:
            with StopRequest() as stop:
                while self.step < config.max_steps:
                    step_metrics = self.update()
                    if self.on_step is not None:
                        self.on_step(self.step, step_metrics)
                    self.log_step(step_metrics)
                    is_best = self.maybe_evaluate()
                    stopping = any_across_ranks(stop.requested, self.device)
                    due = (config.checkpoint_every and self.step % config.checkpoint_every == 0) \
                        or self.step == config.max_steps
                    if due or stopping or is_best:
                        self.save(is_best)
                    if stopping:
                        self.result.stopped_by = stop.signal_name or "another rank"
                        break
                else:  # a signal during the last step's evaluation or save came after the check above:
                    # the run is saved, but the caller must not carry on as if no stop was asked for
                    if any_across_ranks(stop.requested, self.device):
                        self.result.stopped_by = stop.signal_name or "another rank"
        finally:
            self.bar.close()
            self.metrics_log.close()
        if self.last_saved_step != self.step and self.ckpt is not None:  # never end without the final state
            self.save()
        self.result.step = self.step
        return self.result

    def update(self) -> dict[str, float]:
        """One optimizer update over `grad_accum_steps` micro-batches; nothing applied if non-finite."""
        config, device = self.config, self.device
        t_start = time.perf_counter()
        lr = self.schedule(self.step)
        set_lr(self.optimizer, lr)
        self.module.train()
        loss_sum = torch.zeros((), device=device)
        sums: dict[str, float] = {}
        n_tokens = 0
        for micro in range(config.grad_accum_steps):
            batch = _to_device(self.batches.next_batch(), device)
            if self.count_tokens is not None:
                n_tokens += int(self.count_tokens(batch))
            with maybe_no_sync(self.train_module, micro < config.grad_accum_steps - 1), self.autocast():
                loss, m = self.objective(self.run_module, batch)
            (loss / config.grad_accum_steps).backward()
            loss_sum += loss.detach().float()
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip or float("inf")))
        loss_value = float(loss_sum) / config.grad_accum_steps
        if any_across_ranks(not (math.isfinite(loss_value) and math.isfinite(grad_norm)), device):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._non_finite(loss_value, grad_norm, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        n_tokens *= self.ranks.world_size
        self.tokens_seen += n_tokens
        self.window_tokens += n_tokens
        self.window_time += time.perf_counter() - t_start
        self.bar.update(1)
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                **{k: v / config.grad_accum_steps for k, v in sums.items()}}

    def _non_finite(self, loss_value: float, grad_norm: float, lr: float) -> NonFiniteError:
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        return NonFiniteError(f"step {self.step + 1}: non-finite {what} (loss {loss_value}, grad norm {grad_norm}) "
                              f"at lr {lr:.3g}; stopped before the optimizer update; {self._last_good()}")

    def _last_good(self) -> str:
        last = self.result.last_checkpoint
        return f"the last good checkpoint, {last}, is untouched" if last else "no checkpoint was written"

    def _check_eval_losses(self, eval_metrics: dict[str, float]) -> None:
        """A validation loss that is NaN/inf means the last update broke the weights (finite but huge:
        the training loss of that update was still finite). Those weights are not saved, so the
        checkpoint the message calls good is one that evaluates; all ranks hold the same averages,
        so all stop together."""
        for key, value in eval_metrics.items():
            if key.endswith("loss") and not math.isfinite(value):
                raise NonFiniteError(f"step {self.step}: non-finite {key} ({value}) at evaluation; the weights "
                                     f"of this step are not saved; {self._last_good()}")

    def log_step(self, step_metrics: dict[str, float]) -> None:
        step = self.step
        if not (step % self.config.log_every == 0 or step == self.config.max_steps or step == 1):
            return
        record = {"step": step, **mean_across_ranks(step_metrics, self.device), "tokens_seen": self.tokens_seen}
        if self.window_time > 0 and self.window_tokens:
            record["tokens_per_s"] = self.window_tokens / self.window_time
            if self.flops_per_token and self.peak_flops:
                record["mfu"] = mfu(self.flops_per_token, record["tokens_per_s"], self.peak_flops)
        self.window_tokens, self.window_time = 0, 0.0
        if self.ranks.is_main:
            self.metrics_log.write(record)
            self.result.history.append(record)
            self.bar.set_postfix(_postfix(record), refresh=False)

    def maybe_evaluate(self) -> bool:
        """Evaluate when due; True when this step is the new best by `config.best_metric`."""
        config, step = self.config, self.step
        if self.evaluate is None or not ((config.eval_every and step % config.eval_every == 0)
                                         or step == config.max_steps):
            return False
        self.module.eval()
        with torch.no_grad(), self.autocast():
            eval_metrics = mean_across_ranks(dict(self.evaluate(self.module)), self.device)
        self.module.train()
        self.result.last_eval = eval_metrics
        record = {"step": step, **eval_metrics}
        if self.ranks.is_main:
            self.metrics_log.write(record)
            self.result.history.append(record)
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in eval_metrics.items()))
        self._check_eval_losses(eval_metrics)
        if config.best_metric is None:
            return False
        if config.best_metric not in eval_metrics:
            raise GptkitError(f"best_metric {config.best_metric!r} is not among the evaluation "
                              f"metrics {sorted(eval_metrics)}")
        value = float(eval_metrics[config.best_metric])
        best = self.best
        better = best is None or (value < best["value"] if config.best_mode == "min" else value > best["value"])
        if not (better and math.isfinite(value)):
            return False
        self.best = {"metric": config.best_metric, "value": value, "step": step}
        self.result.best_value = value
        return True

    # --- checkpoints ------------------------------------------------------------------------------

    def save(self, is_best: bool = False) -> Path | None:
        """A collective under DDP: every rank takes part (RNG and sampler states gathered), rank 0
        writes; under FSDP every rank also writes its shard of the model and optimizer state."""
        self.last_saved_step = self.step
        if self.ckpt is None:
            return None
        per_rank = None
        if self.ranks.world_size > 1:
            per_rank = {"torch": gather_tensors(torch.get_rng_state())}
            if self.device.type == "cuda":
                per_rank["cuda"] = gather_tensors(torch.cuda.get_rng_state(self.device))
            per_rank_batches = gather_json(self.batches.state_dict())
        path = None
        if self.sharded:  # every rank writes its shard, then rank 0 commits the checkpoint
            state, tensor_files = None, None
            if self.ranks.is_main:
                rng_tensors, rng_meta = rng_state_to_safetensors(per_rank)
                state, tensor_files = self.trainer_state({}, rng_meta), {RNG_FILE: rng_tensors}
                if per_rank is not None:
                    state["batches_per_rank"] = per_rank_batches
            path = save_sharded_checkpoint(self.ckpt, self.step, self.module, self.optimizer, self.save_model,
                                           state, tensor_files, is_best=is_best)
        elif self.ranks.is_main:
            opt_tensors, opt_meta = optimizer_state_to_safetensors(self.optimizer)
            rng_tensors, rng_meta = rng_state_to_safetensors(per_rank)
            state = self.trainer_state(opt_meta, rng_meta)
            if per_rank is not None:
                state["batches_per_rank"] = per_rank_batches
            path = self.ckpt.save(self.step, self.save_model, state,
                                  {OPTIMIZER_FILE: opt_tensors, RNG_FILE: rng_tensors}, is_best=is_best)
        barrier()
        # Past the barrier rank 0 has committed the checkpoint; every rank names it the same (the
        # non-finite message of rank 1 said "no checkpoint was written" when one was).
        path = path or self.ckpt.dir / step_dir_name(self.step)
        self.result.last_checkpoint = path
        if is_best:
            self.result.best_checkpoint = path
        log.debug("checkpoint %s", path)
        return path

    def trainer_state(self, opt_meta: dict, rng_meta: dict) -> dict[str, Any]:
        """trainer_state.json: everything besides tensors that a resume needs, and what made the run."""
        schedule = self.schedule
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "world_size": self.ranks.world_size,
            "batches": self.batches.state_dict(), "optimizer": opt_meta, "rng": rng_meta,
            "schedule": schedule.to_dict() if hasattr(schedule, "to_dict") else repr(schedule),
            "config": self.config.to_dict(), "best": self.best, "extra": self.extra_state,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


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
