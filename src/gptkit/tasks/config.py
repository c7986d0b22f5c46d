"""One fine-tuning run's options, with the paper's defaults (SPEC section 4), checked on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model.config import PRESETS
from ..options import (
    OptionError,
    boolean,
    check_options,
    fraction,
    integer,
    like,
    non_negative_int,
    non_negative_real,
    option,
    optional,
    positive_int,
    positive_real,
)
from ..training.config import TrainConfig
from .glue import TASKS as GLUE
from .tasktype import task_type_names


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Defaults are the paper's (SPEC section 4); each field is declared once
    here (or, for the loop's knobs, in TrainConfig) with its check and help; the CLI reads them."""

    train: str | Path = option(help="training file (.jsonl, .csv, .tsv, .parquet, or a saved dataset)")
    task: str | None = option(None, help="task type: classification, entailment, similarity, multiple_choice, or "
                                         "any type registered with gptkit.tasks.register (implied by glue)")
    glue: str | None = option(None, help="GLUE task preset: its task type, label set and metrics as GLUE reports "
                                         "them (the paper's hyper-parameters are the defaults)",
                              choices=(*GLUE, None))
    val: str | Path | None = option(None, help="validation file: metrics each epoch, best checkpoint kept by the metric")
    test: str | Path | None = option(None, help="test file, scored once with the best checkpoint")
    out: str | Path = option("runs/finetune", help="run directory (checkpoints, metrics, best/, summary.json)")
    init: str | Path | None = option(None, help="pre-training run directory (its model/) or a model directory "
                                                "with a tokenizer")
    no_pretrain: bool = option(False, help="random initial weights (Table 5 'w/o pre-training'): the preset's "
                                           "shape, or init's", check=boolean)
    preset: str | None = option(None, help="model preset for no_pretrain", choices=(*PRESETS, None))
    tokenizer: str | Path | None = option(None, help="tokenizer (default: the one in init)")
    columns: dict[str, str] = field(default_factory=dict)
    regression: bool = option(False, help="real-valued labels, MSE loss (inferred from non-integer labels)",
                              check=boolean)
    label_base: int = option(0, help="multiple choice: index of the first candidate in the label column "
                                     "(Story Cloze: 1)", check=integer)
    lm_coef: float = option(0.5, help="weight of the auxiliary LM loss (0 = 'w/o aux LM')", check=non_negative_real)
    fresh_task_tokens: bool = option(True, help="give the task tokens (start, delimiter, extract) fresh N(0, 0.02) "
                                                "embedding rows, as the paper's new embeddings, when init is a "
                                                "language model (it never read them; a fine-tuned init keeps its "
                                                "rows)", check=boolean)
    transfer_layers: int | None = option(None, help="keep embeddings + the first N pre-trained blocks, "
                                                    "re-initialise the rest (Figure 2)",
                                         check=optional(non_negative_int))
    epochs: float = option(3.0, help="passes over the training file", check=positive_real)
    batch_size: int = option(32, help="examples per update", check=positive_int)
    group_by_length: bool = option(True, help="batch examples of similar length together (each epoch still "
                                              "shuffled; a batch pads to its longest example)", check=boolean)
    lr: float = option(6.25e-5, help="maximum learning rate", check=positive_real)
    warmup: float = option(0.002, help="fraction of the updates spent warming up linearly from 0 (paper: 0.2%), "
                                       "then linear decay to 0", check=fraction)
    weight_decay: float = option(0.01, help="decoupled weight decay on matrices", check=non_negative_real)
    grad_clip: float = like(TrainConfig, "grad_clip")
    clf_pdrop: float = option(0.1, help="dropout before the classifier", check=fraction)
    max_len: int | None = option(None, help="token budget per sequence (default: the model's n_ctx)",
                                 check=optional(positive_int))
    metric: str | None = option(None, help="validation metric that picks the best checkpoint (accuracy; pearson "
                                           "for regression; also f1, matthews, spearman, mse, loss)")
    evals_per_epoch: int = option(1, help="validation runs per epoch", check=positive_int)
    log_every: int | None = option(None, help="metrics line every N updates (default: every evaluation, at most 50)",
                                   check=optional(positive_int))
    eval_batch_size: int = option(64, help="examples per evaluation batch", check=positive_int)
    max_steps: int | None = option(None, help="number of updates (overrides epochs)", check=optional(positive_int))
    seed: int = like(TrainConfig, "seed", 42, help="seed for head init, dropout and shuffling")
    device: str = like(TrainConfig, "device")
    precision: str = like(TrainConfig, "precision")
    parallel: str = like(TrainConfig, "parallel")
    threads: int | None = option(None, help="torch CPU threads", check=optional(positive_int))
    keep_last: int = like(TrainConfig, "keep_last", 1, help="recent checkpoints kept besides the best (each "
                                                           "evaluation writes one, so a crash loses little)")
    resume: bool = option(False, help="continue the run in the run directory", check=boolean)
    overwrite: bool = option(False, help="replace the run in the run directory", check=boolean)
    progress: bool = like(TrainConfig, "progress")

    def __post_init__(self) -> None:
        """Contradictory or out-of-range options fail here, before any file is read."""
        check_options(self)
        if self.glue is not None:
            preset = GLUE[self.glue]
            if self.task not in (None, preset.task):
                raise OptionError("FinetuneConfig", "task", f"{self.task} contradicts glue {self.glue} (a "
                                                            f"{preset.task} task)")
            if self.regression and preset.labels:
                raise OptionError("FinetuneConfig", "regression", f"contradicts glue {self.glue} (classes "
                                                                  f"{', '.join(preset.labels)})")
            self.task = preset.task
        if self.task is None:
            raise OptionError("FinetuneConfig", "task", f"is needed (one of {', '.join(task_type_names())}), or glue")
        if self.task not in task_type_names():
            raise OptionError("FinetuneConfig", "task", f"must be one of {', '.join(task_type_names())}, got {self.task!r}")
        if self.no_pretrain and self.transfer_layers is not None:
            raise OptionError("FinetuneConfig", "transfer_layers", "keeps pre-trained blocks; it contradicts no_pretrain")
        if self.preset is not None and not self.no_pretrain:
            raise OptionError("FinetuneConfig", "preset", "builds a random model: use it with no_pretrain (or pass "
                                                          "init alone)")
        if self.init is None and not (self.no_pretrain and self.preset is not None):
            raise OptionError("FinetuneConfig", "init", "is needed (a model or run directory), or no_pretrain with "
                                                        "a preset and a tokenizer")
        if self.resume and self.overwrite:
            raise OptionError("FinetuneConfig", "resume", "contradicts overwrite; pass one")
