"""Unsupervised pre-training of GPT (SPEC section 3) on a prepared corpus, through THE loop.

`pretrain(...)` is what `gptkit pretrain` runs and what the demo calls directly. Defaults are the
paper's for the optimisation (AdamW 0.9/0.999/1e-8, decay 0.01, max lr 2.5e-4, warmup 2000 then
cosine to 0, clip 1.0, 64 windows per update); the model comes from a preset or a config file and
takes its vocabulary size from the tokenizer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GptkitError
from ..interop.hf import load_weights_into, read_config, save_pretrained
from ..model.config import PRESETS
from ..options import (
    OptionError,
    boolean,
    check_options,
    non_negative_int,
    non_negative_real,
    option,
    optional,
    positive_int,
    positive_real,
)
from .checkpoint import RUN_FILE, Checkpoint, CheckpointManager, read_checkpoint
from .config import TrainConfig
from .distributed import apply_parallelism
from .loop import TrainResult, train
from .objectives import lm_objective
from .optimizer import build_optimizer
from .ranks import rank_info
from .rundir import RunLock, prepare_run_dir
from .schedules import warmup_cosine
from .sharded import export_view

log = logging.getLogger(__name__)

# Not the paper's model: `gpt1` (116.5M parameters) at the paper's 64 x 512 tokens per update is a GPU's
# run, and the default is one a CPU can run. `--preset gpt1` is the paper's model (SPEC section 1), and its
# windows then default to the paper's 512 tokens (seq_len defaults to n_ctx; `small` has 256).
DEFAULT_PRESET = "small"


PRETRAIN_LOOP_DEFAULTS: dict[str, Any] = {"max_steps": 1000, "eval_every": 200, "checkpoint_every": 500}
"""Where pre-training's loop defaults differ from TrainConfig's (the rest are TrainConfig's own).
1,000 updates is a short run to start from, not the paper's 100 epochs of BooksCorpus (about 3.2M
updates of 64 x 512 tokens by docs/distributed.md's estimate): --steps sets the length for a corpus."""


def pretrain_loop(**changes: Any) -> TrainConfig:
    """The loop settings of a pre-training run: TrainConfig with pre-training's defaults."""
    return TrainConfig(**{**PRETRAIN_LOOP_DEFAULTS, **changes})


@dataclass
class PretrainOptions:
    """Everything `gptkit pretrain` takes: the data, model and optimisation here, the loop's own
    knobs (steps, accumulation, clipping, precision, checkpoints, seed, device) in `train`."""

    data: Path = option(help="corpus directory written by `gptkit prepare`")
    out: Path = option(help="run directory (checkpoints, metrics, model/)")
    preset: str | None = option(None, help=f"model preset (default: {DEFAULT_PRESET}; on resume: the run's own)",
                                choices=(*PRESETS, None))
    config: Path | None = option(None, help="a JSON file of GPTConfig fields instead of a preset")
    tokenizer: Path | None = option(None, help="tokenizer (default: the one saved with the corpus)")
    batch_size: int = option(64, help="windows per micro-batch per process (paper: 64)", check=positive_int)
    lr: float = option(2.5e-4, help="maximum learning rate (paper: 2.5e-4)", check=positive_real)
    warmup: int | None = option(None, help="linear warmup updates (default: the paper's 2000, capped at 10% of "
                                           "the steps)", check=optional(non_negative_int))
    seq_len: int | None = option(None, help="window length in tokens, <= n_ctx (default: n_ctx; on resume: the run's own)",
                                 check=optional(positive_int))
    weight_decay: float = option(0.01, help="decoupled weight decay on matrices", check=non_negative_real)
    resume: bool = option(False, help="continue the run directory from its newest complete checkpoint", check=boolean)
    overwrite: bool = option(False, help="delete the run already in the run directory and start over", check=boolean)
    eval_windows: int = option(64, help="validation windows per evaluation", check=positive_int)
    threads: int | None = option(None, help="torch CPU threads (default: torch's choice)", check=optional(positive_int))
    peak_flops: float | None = option(None, help="peak FLOP/s for MFU (default: measured by a matmul probe)",
                                      check=optional(positive_real))
    train: TrainConfig = field(default_factory=pretrain_loop)
    """The loop's settings; `pretrain_loop(...)` gives pre-training's defaults."""

    def __post_init__(self) -> None:
        check_options(self)
        if self.resume and self.overwrite:
            raise OptionError("PretrainOptions", "resume", "contradicts overwrite; pass one")


def pretrain(opts: PretrainOptions) -> TrainResult:
    """Validate everything, then train (or resume) and leave RUN_DIR/model as the final model.

    Every option was checked when `opts` was built and every input is read here before the run
    directory is touched, so a refused command leaves nothing behind."""
    from ..data.sampler import WindowSampler, eval_windows
    from ..model import GPT, training_flops_per_token

    if opts.threads:
        torch.set_num_threads(opts.threads)
    loop = opts.train
    corpus, tok, tok_path = _load_data(opts)
    config = _model_config(opts, tok.vocab_size)
    # On --resume the run's own model and window length are the defaults (not the default preset's),
    # read here, before the directory is claimed; the claimed checkpoint is checked again below.
    peek = _newest_checkpoint(opts.out) if opts.resume else None
    if peek is not None:
        config = _resumed_model_config(opts, peek, config)
    seq_len = opts.seq_len or _recipe(peek).get("seq_len") or config.n_ctx
    if not seq_len <= config.n_ctx:
        raise OptionError("PretrainOptions", "seq_len", f"{seq_len} must be at most the model's n_ctx ({config.n_ctx})")
    ranks = rank_info()
    sampler = WindowSampler(corpus.split("train"), opts.batch_size, seq_len, seed=loop.seed, rank=ranks.rank,
                            world_size=ranks.world_size, name=f"{opts.data} (train split)",
                            pin_memory=loop.device.startswith("cuda"))
    val = eval_windows(corpus.split("val"), seq_len, opts.eval_windows, rank=ranks.rank,
                       world_size=ranks.world_size) if "val" in corpus.splits else []
    if not val:
        log.warning("%s: no validation window of %d tokens; validation loss is skipped", opts.data, seq_len)
    # The paper's 2,000 warmup updates, capped at 10% of the run: uncapped, a run of 2,000 updates or
    # fewer (the default 1,000 among them) would never leave the warmup or reach the maximum rate.
    warmup = opts.warmup if opts.warmup is not None else min(2000, max(1, loop.max_steps // 10))
    # What must stay the same for a resumed run to continue this one (checked against the checkpoint).
    # (`warmup` as given: None, the default, follows --steps, which a resume may extend.)
    recipe = {"lr": opts.lr, "weight_decay": opts.weight_decay, "warmup": opts.warmup, "seq_len": seq_len,
              "batch_size": opts.batch_size}

    resume = prepare_run_dir(opts.out, resume=opts.resume, overwrite=opts.overwrite, kind="pretrain",
                             info={"data": str(opts.data), "tokenizer": str(tok_path)})
    try:  # from here on the run directory is ours (RunLock): released however this ends
        checkpoint = read_checkpoint(resume) if resume is not None else None
        if checkpoint is not None:
            config = _resumed_model_config(opts, checkpoint, config)
            checkpoint.require_same("PretrainOptions", recipe)

        torch.manual_seed(loop.seed)  # model init is part of the run's determinism
        model = apply_parallelism(GPT(config).to(loop.device), loop.parallel, precision=loop.precision)
        optimizer = build_optimizer(model, lr=opts.lr, weight_decay=opts.weight_decay, betas=(0.9, 0.999), eps=1e-8)
        schedule = warmup_cosine(opts.lr, warmup, loop.max_steps)

        def save_model(directory: Path) -> None:
            save_pretrained(export_view(model), directory)  # FSDP: the copy gathered on rank 0
            tok.save(directory)

        def evaluate(module: torch.nn.Module) -> dict[str, float]:
            return evaluate_lm(module, val, opts.batch_size, loop.device)

        flops = training_flops_per_token(config.replace(n_ctx=seq_len))  # attention cost of the real window
        log.info("pre-training %s parameters, %d steps x %d windows x %d tokens (x%d accumulation, x%d ranks), "
                 "lr %.3g warmup %d", f"{model.num_parameters():,}", loop.max_steps, opts.batch_size, seq_len,
                 loop.grad_accum_steps, ranks.world_size, opts.lr, warmup)
        return train(
            model, lm_objective, sampler, optimizer, schedule, loop,
            run_dir=opts.out, resume_from=checkpoint, save_model=save_model,
            load_model=partial(load_weights_into, model), evaluate=evaluate if val else None, flops_per_token=flops,
            peak_flops=opts.peak_flops, extra_state={"data": str(opts.data), "tokenizer": str(tok_path),
                                                     "recipe": recipe, "model_source": _model_source(opts)},
        )
    finally:
        RunLock.release_dir(opts.out)


def _load_data(opts: PretrainOptions):
    """The corpus and its tokenizer, checked against each other."""
    from ..data.corpus import load_corpus
    from ..tokenizer import GPTTokenizer

    if not Path(opts.data).exists():
        raise GptkitError(f"{opts.data}: no such corpus directory")
    corpus = load_corpus(opts.data)
    tok_path = Path(opts.tokenizer) if opts.tokenizer else corpus.tokenizer_path
    if not tok_path.exists():
        raise GptkitError(f"{tok_path}: tokenizer not found (pass --tokenizer)")
    tok = GPTTokenizer.load(tok_path)
    if tok.vocab_size < corpus.vocab_size:
        raise GptkitError(f"{tok_path}: vocabulary of {tok.vocab_size} is smaller than the corpus's "
                          f"{corpus.vocab_size} (meta.json): not the tokenizer the corpus was made with")
    return corpus, tok, tok_path


def _model_source(opts: PretrainOptions) -> str:
    return f"config {opts.config}" if opts.config is not None else f"preset {opts.preset or DEFAULT_PRESET}"


def _model_config(opts: PretrainOptions, vocab_size: int):
    from ..model import ConfigError, GPTConfig, preset

    try:
        if opts.config is not None:
            if not Path(opts.config).is_file():
                raise GptkitError(f"{opts.config}: no such model config file")
            config = GPTConfig.from_json_file(opts.config)
        else:
            config = preset(opts.preset or DEFAULT_PRESET)
        return config.replace(vocab_size=vocab_size)
    except ConfigError as e:
        raise GptkitError(str(e)) from None


def _newest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint `--resume` will take (the newest intact one), read without claiming the
    directory (None: none yet). Not merely the newest: a damaged one, which the resume passes over,
    must not decide the model either (its config.json may be what is damaged)."""
    if not (Path(run_dir) / RUN_FILE).is_file():
        return None
    found = CheckpointManager(run_dir).resumable(warn=False)
    return read_checkpoint(found) if found is not None else None


def _recipe(checkpoint: Checkpoint | None) -> dict[str, Any]:
    return checkpoint.state.get("extra", {}).get("recipe", {}) if checkpoint is not None else {}


def _resumed_model_config(opts: PretrainOptions, checkpoint: Checkpoint, config):
    """The checkpoint's model; a --preset/--config that names another one is refused, not ignored."""
    saved, _ = read_config(checkpoint.path)
    named = opts.config is not None or opts.preset is not None
    if named and saved.to_dict() != config.to_dict():
        raise GptkitError(f"{checkpoint.path}: the run was trained with another model than {_model_source(opts)} "
                          f"gives; resume without --preset/--config, or with the ones it was started with")
    return saved


def evaluate_lm(module: torch.nn.Module, windows: list, batch_size: int, device: str = "cpu") -> dict[str, float]:
    """Mean next-token cross-entropy over fixed windows, and its exponential (perplexity)."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        rows = torch.from_numpy(np.stack(windows[i : i + batch_size])).to(device)
        # through the model's own forward (FSDP gathers the root's weights there), the chunked loss
        total += module(rows[:, :-1], targets=rows[:, 1:]).item() * rows[:, 1:].numel()
        count += rows[:, 1:].numel()
    loss = total / max(1, count)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
