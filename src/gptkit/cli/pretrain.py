"""`gptkit pretrain --data CORPUS --out RUN_DIR`: unsupervised pre-training (SPEC section 3)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pre-train a GPT on a prepared corpus (or resume a run)",
        description="Pre-train a GPT language model on token shards written by `gptkit prepare`. Defaults "
                    "are the paper's optimisation settings; see docs/training.md.")
    p.add_argument("--data", required=True, type=Path, help="corpus directory written by `gptkit prepare`")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics, model/)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default="small", help="model preset: tiny, mini, small, gpt1, gpt2 (default small)")
    model.add_argument("--config", type=Path, help="a JSON file of GPTConfig fields instead of a preset")
    p.add_argument("--tokenizer", type=Path, help="tokenizer (default: the one saved with the corpus)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer updates in the whole run (default 1000)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per micro-batch per process (paper: 64)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches accumulated per update (default 1)")
    p.add_argument("--lr", type=float, default=2.5e-4, help="maximum learning rate (paper: 2.5e-4)")
    p.add_argument("--warmup", type=int, help="linear warmup updates (default: 2000, capped at 10%% of --steps)")
    p.add_argument("--seq-len", type=int, help="window length in tokens, <= n_ctx (default: n_ctx)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="decoupled weight decay on matrices (0.01)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip (1.0; 0 disables)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16 = bf16 compute on fp32 master weights; auto (default) = bf16 where this device's "
                        "bf16 matmuls measure >= 1.5x fp32, else fp32 (the choice is printed)")
    p.add_argument("--compile", action="store_true", help="run the model under torch.compile")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue RUN_DIR from its newest complete checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete the run already in RUN_DIR and start over")
    p.add_argument("--eval-every", type=int, default=200, help="validation loss every N steps (0: only at the end)")
    p.add_argument("--eval-windows", type=int, default=64, help="validation windows per evaluation (default 64)")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep (default 3)")
    p.add_argument("--log-every", type=int, default=10, help="metrics line every N steps (default 10)")
    p.add_argument("--seed", type=int, default=1337, help="seed for init, dropout and window sampling")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--peak-flops", type=float, help="peak FLOP/s for MFU (default: measured by a matmul probe)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    import signal

    from ..training.pretrain import PretrainOptions, pretrain
    from ..training.ranks import rank_info

    opts = PretrainOptions(
        data=args.data, out=args.out, preset=args.preset, config=args.config, tokenizer=args.tokenizer,
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
        seq_len=args.seq_len, weight_decay=args.weight_decay, grad_clip=args.grad_clip, precision=args.precision,
        compile=args.compile, resume=args.resume, overwrite=args.overwrite, eval_every=args.eval_every,
        eval_windows=args.eval_windows, save_every=args.save_every, keep_last=args.keep_last,
        log_every=args.log_every, seed=args.seed, threads=args.threads, device=args.device,
        peak_flops=args.peak_flops, progress=not args.quiet,
    )
    result = pretrain(opts)
    if not rank_info().is_main:
        return 0
    if result.stopped_by is not None:
        print(f"gptkit pretrain: stopped by {result.stopped_by} after step {result.step}; checkpoint saved in "
              f"{result.last_checkpoint}; continue with the same command plus --resume", file=sys.stderr)
        signum = getattr(signal, result.stopped_by, None)
        return 128 + int(signum) if signum is not None else 1
    train_lines = [r for r in result.history if "loss" in r]
    parts = [f"step {result.step}"]
    if train_lines:
        parts.append(f"train loss {train_lines[-1]['loss']:.4f}")
    if result.last_eval:
        parts.append(f"val loss {result.last_eval['val_loss']:.4f} (perplexity {result.last_eval['val_ppl']:.2f})")
    print("done: " + ", ".join(parts))
    print(f"model: {Path(args.out) / 'model'}  checkpoint: {result.last_checkpoint}")
    return 0
