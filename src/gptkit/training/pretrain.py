"""Unsupervised pre-training of GPT (SPEC section 3) on a prepared corpus, through THE loop.

`pretrain(...)` is what `gptkit pretrain` runs and what the demo calls directly. Defaults are the
paper's for the optimisation (AdamW 0.9/0.999/1e-8, decay 0.01, max lr 2.5e-4, warmup 2000 then
cosine to 0, clip 1.0, 64 windows per update); the model comes from a preset or a config file and
takes its vocabulary size from the tokenizer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GptkitError
from .checkpoint import check_run_kind, prepare_run_dir
from .config import TrainConfig
from .loop import TrainResult, train
from .objectives import lm_objective
from .optimizer import build_optimizer
from .ranks import rank_info
from .schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class PretrainOptions:
    """Everything `gptkit pretrain` takes (the CLI maps its flags one to one)."""

    data: Path
    out: Path
    preset: str | None = "small"
    config: Path | None = None
    tokenizer: Path | None = None
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2.5e-4
    warmup: int | None = None
    """None: the paper's 2000 updates, capped at 10% of `steps` for short runs."""
    seq_len: int | None = None
    """None: the model's n_ctx."""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "auto"
    compile: bool = False
    resume: bool = False
    overwrite: bool = False
    eval_every: int = 200
    eval_windows: int = 64
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 1337
    threads: int | None = None
    device: str = "cpu"
    peak_flops: float | None = None
    progress: bool = True


def pretrain(opts: PretrainOptions) -> TrainResult:
    """Validate everything, then train (or resume) and leave RUN_DIR/model as the final model."""
    from ..data.corpus import load_corpus
    from ..data.sampler import WindowSampler, eval_windows
    from ..model import GPT, ConfigError, GPTConfig, preset, training_flops_per_token
    from ..tokenizer import GPTTokenizer

    if opts.threads:
        torch.set_num_threads(opts.threads)
    for name in ("steps", "batch_size", "grad_accum"):
        if getattr(opts, name) < 1:
            raise GptkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if not opts.lr > 0:
        raise GptkitError(f"--lr must be positive, got {opts.lr}")
    if opts.resume and opts.overwrite:
        raise GptkitError("--resume and --overwrite contradict each other; pass one")

    # --- inputs, all checked before anything is written ---
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

    run_dir = Path(opts.out)
    if opts.resume and (run_dir / "run.json").is_file():
        check_run_kind(run_dir, "pretrain")
    try:
        if opts.config is not None:
            if not Path(opts.config).is_file():
                raise GptkitError(f"{opts.config}: no such model config file")
            config = GPTConfig.from_json_file(opts.config)
        else:
            config = preset(opts.preset or "small")
        config = config.replace(vocab_size=tok.vocab_size)
    except ConfigError as e:
        raise GptkitError(str(e)) from None

    seq_len = opts.seq_len or config.n_ctx
    if not 1 <= seq_len <= config.n_ctx:
        raise GptkitError(f"--seq-len {seq_len} must be between 1 and the model's n_ctx ({config.n_ctx})")
    ranks = rank_info()
    train_shards = corpus.split("train")
    sampler = WindowSampler(train_shards, opts.batch_size, seq_len, seed=opts.seed, rank=ranks.rank,
                            world_size=ranks.world_size, name=f"{opts.data} (train split)",
                            pin_memory=opts.device.startswith("cuda"))
    val = eval_windows(corpus.split("val"), seq_len, opts.eval_windows, rank=ranks.rank,
                       world_size=ranks.world_size) if "val" in corpus.splits else []
    if not val:
        log.warning("%s: no validation window of %d tokens; validation loss is skipped", opts.data, seq_len)

    resume_from = prepare_run_dir(run_dir, resume=opts.resume, overwrite=opts.overwrite, kind="pretrain",
                                  info={"data": str(opts.data), "tokenizer": str(tok_path)})
    if resume_from is not None:
        # the checkpoint's own config wins: flags describe a new run, the checkpoint this one
        saved = GPT.from_pretrained(resume_from).config
        if saved.to_dict() != config.to_dict():
            log.warning("resuming with the checkpoint's model config, not --preset/--config")
        config = saved

    torch.manual_seed(opts.seed)  # model init is part of the run's determinism
    model = GPT(config).to(opts.device)
    optimizer = build_optimizer(model, lr=opts.lr, weight_decay=opts.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    warmup = opts.warmup if opts.warmup is not None else min(2000, max(1, opts.steps // 10))
    schedule = warmup_cosine(opts.lr, warmup, opts.steps)

    def save_model(directory: Path) -> None:
        model.save_pretrained(directory)
        tok.save(directory)

    def load_model(directory: Path) -> None:
        state = GPT.from_pretrained(directory).state_dict()
        model.load_state_dict(state)

    def evaluate(module: torch.nn.Module) -> dict[str, float]:
        return evaluate_lm(module, val, opts.batch_size, opts.device)

    tc = TrainConfig(
        max_steps=opts.steps, grad_accum_steps=opts.grad_accum, grad_clip=opts.grad_clip,
        log_every=opts.log_every, eval_every=opts.eval_every, checkpoint_every=opts.save_every,
        keep_last=opts.keep_last, precision=opts.precision, compile=opts.compile, seed=opts.seed,
        device=opts.device, progress=opts.progress,
    )
    flops = training_flops_per_token(config.replace(n_ctx=seq_len))  # attention cost of the real window
    log.info("pre-training %s parameters, %d steps x %d windows x %d tokens (x%d accumulation, x%d ranks), "
             "lr %.3g warmup %d", f"{model.num_parameters():,}", opts.steps, opts.batch_size, seq_len,
             opts.grad_accum, ranks.world_size, opts.lr, warmup)
    return train(
        model, lm_objective, sampler, optimizer, schedule, tc,
        run_dir=run_dir, resume_from=resume_from, save_model=save_model, load_model=load_model,
        evaluate=evaluate if val else None, flops_per_token=flops, peak_flops=opts.peak_flops,
        extra_state={"data": str(opts.data), "tokenizer": str(tok_path), "seq_len": seq_len,
                     "batch_size": opts.batch_size},
    )


def evaluate_lm(module: torch.nn.Module, windows: list, batch_size: int, device: str = "cpu") -> dict[str, float]:
    """Mean next-token cross-entropy over fixed windows, and its exponential (perplexity)."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        rows = torch.from_numpy(np.stack(windows[i : i + batch_size])).to(device)
        hidden = module.transformer(rows[:, :-1]).hidden
        total += module.lm_loss(hidden, rows[:, 1:], reduction="sum").item()
        count += rows[:, 1:].numel()
    loss = total / max(1, count)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
