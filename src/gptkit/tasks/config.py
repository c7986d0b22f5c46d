"""One fine-tuning run's options, with the paper's defaults (SPEC section 4), checked on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GptkitError


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Defaults are the paper's (SPEC section 4)."""

    task: str
    train: str | Path
    val: str | Path | None = None
    test: str | Path | None = None
    out: str | Path = "runs/finetune"
    init: str | Path | None = None
    """A pre-training run directory (its `model/` is used) or any model directory with a tokenizer."""
    no_pretrain: bool = False
    """Random weights (Table 5 'w/o pre-training'): the shape of `init`, or of `preset`."""
    preset: str | None = None
    tokenizer: str | Path | None = None
    columns: dict[str, str] = field(default_factory=dict)
    regression: bool = False
    label_base: int = 0
    lm_coef: float = 0.5
    transfer_layers: int | None = None
    """Keep the embeddings and the first N blocks of the pre-trained model; re-initialise the rest."""
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 6.25e-5
    warmup: float = 0.002
    """Fraction of the updates spent warming up linearly from 0 (0.2% in the paper)."""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    clf_pdrop: float = 0.1
    max_len: int | None = None
    metric: str | None = None
    """Validation metric for the best checkpoint (accuracy, f1, matthews, pearson, spearman)."""
    evals_per_epoch: int = 1
    eval_batch_size: int = 64
    max_steps: int | None = None
    """Override the number of updates (default epochs x batches per epoch)."""
    seed: int = 42
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = None
    keep_last: int = 1
    """Recent checkpoints kept besides the best (each evaluation writes one, so a crash loses little)."""
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        """Contradictory or out-of-range options fail here, before any file is read."""
        if self.no_pretrain and self.transfer_layers is not None:
            raise GptkitError("--transfer-layers keeps pre-trained blocks; it contradicts --no-pretrain")
        if self.preset is not None and not self.no_pretrain:
            raise GptkitError("--preset builds a random model: use it with --no-pretrain (or pass --init alone)")
        if self.init is None and not (self.no_pretrain and self.preset is not None):
            raise GptkitError("pass --init MODEL_OR_RUN_DIR, or --no-pretrain --preset P --tokenizer T")
        checks = [("--lm-coef", self.lm_coef >= 0), ("--epochs", self.epochs > 0), ("--batch-size", self.batch_size > 0),
                  ("--lr", self.lr > 0), ("--warmup", 0 <= self.warmup < 1), ("--clf-pdrop", 0 <= self.clf_pdrop < 1),
                  ("--max-len", self.max_len is None or self.max_len > 0),
                  ("--max-steps", self.max_steps is None or self.max_steps > 0),
                  ("--evals-per-epoch", self.evals_per_epoch > 0)]
        for flag, ok in checks:
            if not ok:
                raise GptkitError(f"{flag} {getattr(self, flag[2:].replace('-', '_'))}: out of range")
