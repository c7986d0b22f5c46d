"""`gptkit pretrain --data CORPUS --out RUN_DIR`: unsupervised pre-training (SPEC section 3).

The flags, their defaults and their checks are `PretrainOptions`' and `TrainConfig`'s declarations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_options, build

# PretrainOptions' own fields with a flag, and the loop's (TrainConfig) that pre-training exposes.
RECIPE = ("data", "out", "tokenizer", "batch_size", "lr", "warmup", "seq_len", "weight_decay", "eval_windows",
          "threads", "peak_flops")
LOOP = ("max_steps", "grad_accum_steps", "grad_clip", "precision", "compile", "parallel", "eval_every",
        "checkpoint_every",
        "keep_last", "log_every", "seed", "device")


def register(subparsers) -> None:
    from ..training.config import TrainConfig
    from ..training.pretrain import PRETRAIN_LOOP_DEFAULTS, PretrainOptions

    p = subparsers.add_parser(
        "pretrain", help="pre-train a GPT on a prepared corpus (or resume a run)",
        description="Pre-train a GPT language model on token shards written by `gptkit prepare`. Defaults "
                    "are the paper's optimisation settings; see docs/training.md.")
    add_options(p, PretrainOptions, ("preset", "config"), group=p.add_mutually_exclusive_group())
    add_options(p, PretrainOptions, RECIPE)
    add_options(p, TrainConfig, LOOP, defaults=PRETRAIN_LOOP_DEFAULTS)
    add_options(p, PretrainOptions, ("resume", "overwrite"), group=p.add_mutually_exclusive_group())
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from ..training.checkpoint import MODEL_DIR
    from ..training.config import TrainConfig
    from ..training.pretrain import PretrainOptions, pretrain
    from ..training.ranks import rank_info
    from ..training.signals import exit_status

    loop = build(TrainConfig, args, LOOP, progress=not args.quiet)
    opts = build(PretrainOptions, args, (*RECIPE, "preset", "config", "resume", "overwrite"), train=loop)
    result = pretrain(opts)
    if not rank_info().is_main:  # rank 0 reports; every rank exits alike, so a stop is never a 0
        return exit_status(result.stopped_by) if result.stopped_by is not None else 0
    if result.stopped_by is not None:
        print(f"gptkit pretrain: stopped by {result.stopped_by} after step {result.step}; checkpoint saved in "
              f"{result.last_checkpoint}; continue with the same command plus --resume", file=sys.stderr)
        return exit_status(result.stopped_by)
    train_lines = [r for r in result.history if "loss" in r]
    parts = [f"step {result.step}"]
    if train_lines:
        parts.append(f"train loss {train_lines[-1]['loss']:.4f}")
    if result.last_eval:
        parts.append(f"val loss {result.last_eval['val_loss']:.4f} (perplexity {result.last_eval['val_ppl']:.2f})")
    print("done: " + ", ".join(parts))
    print(f"model: {Path(args.out) / MODEL_DIR}  checkpoint: {result.last_checkpoint}")
    return 0
