"""`TrainConfig`: the loop's knobs, one typed dataclass validated at construction and saved in every
checkpoint's `trainer_state.json`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import GptkitError

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """How long and how the generic loop runs; what it optimises is the caller's business."""

    max_steps: int
    """Number of optimizer updates in the whole run (a resumed run continues up to this)."""
    grad_accum_steps: int = 1
    """Micro-batches whose gradients are summed into one update (global batch = micro x accum x ranks)."""
    grad_clip: float | None = 1.0
    """Global gradient-norm clip (the released GPT-1 code uses 1.0); None or 0 disables clipping
    but the norm is still computed, because a non-finite norm must stop the run."""
    log_every: int = 10
    """Write a metrics line (and refresh the progress bar's numbers) every this many steps."""
    eval_every: int = 0
    """Call the evaluation callback every this many steps (0: only at the end)."""
    checkpoint_every: int = 0
    """Save a checkpoint every this many steps (0: only at the end and on SIGTERM/SIGINT)."""
    keep_last: int = 3
    """Keep this many most recent checkpoints (the best one by `best_metric` is kept in addition)."""
    precision: Precision = "auto"
    """'bf16': forward and loss on bf16 casts of the weights, fp32 master weights and optimizer;
    'auto': bf16 where the device's bf16 matmuls measure worth it (training/precision.py)."""
    compile: bool = False
    """Run the objective on torch.compile(module)."""
    seed: int = 1337
    """Seeds torch, numpy and random at the start of a fresh run (a resumed run restores RNG states)."""
    device: str = "cpu"
    """Where the module and batches live: 'cpu', 'cuda', 'cuda:1', ..."""
    best_metric: str | None = None
    """An evaluation metric name (e.g. 'val_loss', 'accuracy'): the best checkpoint by it is kept."""
    best_mode: Literal["min", "max"] = "min"
    """Whether a smaller or larger `best_metric` is better."""
    progress: bool = True
    """Show a tqdm bar on stderr (only on rank 0, and only when stderr is a terminal)."""

    def __post_init__(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
                kind = "a non-negative" if allow_zero else "a positive"
                raise GptkitError(f"TrainConfig.{name} must be {kind} integer, got {value!r}")

        positive("max_steps")
        positive("grad_accum_steps")
        positive("log_every")
        positive("eval_every", allow_zero=True)
        positive("checkpoint_every", allow_zero=True)
        positive("keep_last")
        if self.grad_clip is not None and not self.grad_clip >= 0:
            raise GptkitError(f"TrainConfig.grad_clip must be >= 0 or None, got {self.grad_clip!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise GptkitError(f"TrainConfig.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.best_mode not in ("min", "max"):
            raise GptkitError(f"TrainConfig.best_mode must be 'min' or 'max', got {self.best_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
