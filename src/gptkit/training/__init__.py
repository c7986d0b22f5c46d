"""THE training loop of gptkit, shared by pre-training, fine-tuning and the demo.

The loop (`train`) is generic: it optimises any nn.Module with a pluggable objective and a resumable
batch source; GPT-specific parts (the LM objective, `pretrain`) sit on top of it.

Example (a toy regression, nothing GPT about it)::

    import torch
    from gptkit.training import TrainConfig, build_optimizer, constant, train

    class Batches:                      # any object with these three methods
        def __init__(self): self.i = 0
        def next_batch(self):
            g = torch.Generator().manual_seed(self.i); self.i += 1
            x = torch.randn(8, 4, generator=g)
            return x, x.sum(1, keepdim=True)
        def state_dict(self): return {"i": self.i}          # JSON-serialisable
        def load_state_dict(self, s): self.i = s["i"]

    def objective(module, batch):       # (module, batch) -> (loss, float metrics)
        x, y = batch
        loss = torch.nn.functional.mse_loss(module(x), y)
        return loss, {}

    model = torch.nn.Linear(4, 1)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0)
    result = train(model, objective, Batches(), opt, constant(1e-2),
                   TrainConfig(max_steps=100, checkpoint_every=50), run_dir="runs/toy")

Resume: `resume_from = prepare_run_dir("runs/toy", resume=True)` then the same `train(...,
resume_from=resume_from)`. See docs/training.md.
"""

from .checkpoint import CheckpointManager
from .config import TrainConfig
from .loop import BatchSource, NonFiniteError, TrainResult, train
from .metrics import MetricsLog, read_metrics
from .objectives import Objective, lm_objective
from .optimizer import build_optimizer
from .perf import measure_matmul_flops, mfu
from .pretrain import PretrainOptions, evaluate_lm, pretrain
from .ranks import RankInfo, rank_info
from .resume import seed_everything
from .rundir import RunLock, check_run_kind, prepare_run_dir
from .schedules import Schedule, constant, warmup_cosine, warmup_linear

__all__ = [
    "BatchSource",
    "CheckpointManager",
    "MetricsLog",
    "NonFiniteError",
    "Objective",
    "PretrainOptions",
    "RunLock",
    "RankInfo",
    "Schedule",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "check_run_kind",
    "constant",
    "lm_objective",
    "evaluate_lm",
    "measure_matmul_flops",
    "mfu",
    "prepare_run_dir",
    "pretrain",
    "rank_info",
    "read_metrics",
    "seed_everything",
    "train",
    "warmup_cosine",
    "warmup_linear",
]
