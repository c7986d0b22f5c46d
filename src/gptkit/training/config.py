"""`TrainConfig`: the loop's knobs, one typed dataclass validated at construction and saved in every
checkpoint's `trainer_state.json`.

Each field is declared once (`gptkit.options.option`): its default, its check and its help. The
recipes (`PretrainOptions`, `FinetuneConfig`) and the CLI read these declarations instead of
repeating them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..options import (
    boolean,
    check_options,
    non_negative_int,
    non_negative_real,
    option,
    optional,
    positive_int,
)
from ..options import device as device_check

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = Precision.__args__
"""The precision choices, for every option that takes one."""
Parallel = Literal["ddp", "fsdp"]
PARALLELS: tuple[str, ...] = Parallel.__args__
"""How several ranks share the work (training.distributed.apply_parallelism)."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how the generic loop runs; what it optimises is the caller's business."""

    max_steps: int = option(help="optimizer updates in the whole run (a resumed run continues up to this)",
                            check=positive_int, flag="steps")
    grad_accum_steps: int = option(1, help="micro-batches whose gradients are summed into one update "
                                          "(global batch = micro x accum x ranks)",
                                   check=positive_int, flag="grad-accum")
    grad_clip: float | None = option(1.0, help="global gradient-norm clip (the released GPT-1 code uses 1.0; 0 "
                                               "disables clipping, the norm is still computed to catch NaN)",
                                     check=optional(non_negative_real))
    log_every: int = option(10, help="write a metrics line (and refresh the progress bar) every N steps",
                            check=positive_int)
    eval_every: int = option(0, help="run the evaluation every N steps (0: only at the end)", check=non_negative_int)
    checkpoint_every: int = option(0, help="save a checkpoint every N steps (0: only at the end and on "
                                           "SIGTERM/SIGINT)", check=non_negative_int, flag="save-every")
    keep_last: int = option(3, help="most recent checkpoints kept (the best one is kept in addition)",
                            check=positive_int)
    precision: Precision = option("auto", help="bf16: forward and loss on bf16 casts of the fp32 master weights "
                                               "(optimizer fp32); auto: bf16 where a timed training step of "
                                               "this model costs fp32 >= 1.1x the CPU time of bf16 (or a "
                                               "bf16 GPU), else fp32 (the choice is printed; "
                                               "training/precision.py)", choices=PRECISIONS)
    compile: bool = option(False, help="run the model under torch.compile", check=boolean)
    parallel: Parallel = option("ddp", help="under torchrun: ddp (a model replica per rank, gradients all-reduced) "
                                            "or fsdp (parameters, gradients and optimizer state sharded over the "
                                            "ranks; sharded checkpoints); the recipe applies it before building "
                                            "the optimizer", choices=PARALLELS)
    seed: int = option(1337, help="seeds torch, numpy and random at the start of a fresh run (a resumed run "
                                  "restores the RNG states)", check=non_negative_int)
    device: str = option("cpu", help="where the module and batches live: cpu, cuda, cuda:N", check=device_check)
    best_metric: str | None = option(None, help="an evaluation metric name (e.g. val_loss, accuracy): the best "
                                                "checkpoint by it is kept")
    best_mode: Literal["min", "max"] = option("min", help="whether a smaller or larger best_metric is better",
                                              choices=("min", "max"))
    progress: bool = option(True, help="show a tqdm bar on stderr (rank 0, and only when stderr is a terminal)",
                            check=boolean)

    def __post_init__(self) -> None:
        check_options(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
