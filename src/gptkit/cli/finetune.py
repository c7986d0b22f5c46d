"""`gptkit finetune --task TYPE --train F --val F --init DIR --out RUN_DIR`: supervised fine-tuning
with the paper's input transformations and auxiliary LM loss (SPEC section 4)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TASKS = ("classification", "entailment", "similarity", "multiple_choice")


def add_column_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--column", action="append", metavar="FIELD=COLUMN", default=[],
                   help="read FIELD from COLUMN (repeatable), e.g. text=review, label=stars, choices=e0,e1,e2 "
                        "(fields: text | premise, hypothesis | sentence1, sentence2 | context, question, choices; label)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a (pre-trained) GPT on a classification, entailment, similarity or multiple-choice task",
        description="Fine-tune with the paper's input transformations and L = task loss + lm_coef x LM loss. "
                    "Defaults are the paper's (lr 6.25e-5, batch 32, 3 epochs, warmup 0.2%%, lm_coef 0.5). "
                    "See docs/finetuning.md.")
    p.add_argument("--task", required=True, choices=TASKS, help="task type")
    p.add_argument("--train", required=True, type=Path, help="training file (.jsonl, .csv, .tsv, .parquet, or a saved dataset)")
    p.add_argument("--val", type=Path, help="validation file: metrics each epoch, best checkpoint kept by --metric")
    p.add_argument("--test", type=Path, help="test file, scored once with the best checkpoint")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics, best/, summary.json)")
    p.add_argument("--init", type=Path, help="pre-training run directory (its model/) or a model directory with a tokenizer")
    p.add_argument("--no-pretrain", action="store_true",
                   help="random initial weights (Table 5 'w/o pre-training'): --preset's shape, or --init's")
    p.add_argument("--preset", help="model preset for --no-pretrain (tiny, mini, small, gpt1, gpt2)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer (default: the one in --init)")
    add_column_args(p)
    p.add_argument("--regression", action="store_true", help="real-valued labels, MSE loss (inferred from non-integer labels)")
    p.add_argument("--label-base", type=int, default=0, help="multiple choice: index of the first candidate in the label column (Story Cloze: 1)")
    p.add_argument("--lm-coef", type=float, default=0.5, help="weight of the auxiliary LM loss (0.5; 0 = 'w/o aux LM')")
    p.add_argument("--transfer-layers", type=int, help="keep embeddings + the first N pre-trained blocks, re-initialise the rest (Figure 2)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training file (3)")
    p.add_argument("--max-steps", type=int, help="number of updates (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per update (32)")
    p.add_argument("--lr", type=float, default=6.25e-5, help="maximum learning rate (6.25e-5)")
    p.add_argument("--warmup", type=float, default=0.002, help="fraction of updates for linear warmup (0.002), then linear decay to 0")
    p.add_argument("--weight-decay", type=float, default=0.01, help="decoupled weight decay on matrices (0.01)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip (1.0; 0 disables)")
    p.add_argument("--clf-pdrop", type=float, default=0.1, help="dropout before the classifier (0.1)")
    p.add_argument("--max-len", type=int, help="token budget per sequence (default: the model's n_ctx)")
    p.add_argument("--metric", help="validation metric that picks the best checkpoint (accuracy; pearson for regression; "
                                    "also f1, matthews, spearman, loss)")
    p.add_argument("--evals-per-epoch", type=int, default=1, help="validation runs per epoch (1)")
    p.add_argument("--seed", type=int, default=42, help="seed for head init, dropout and shuffling")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16 compute on fp32 master weights; auto (default) measures which pays here")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the run in --out")
    resume.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def run(args: argparse.Namespace) -> int:
    from ..tasks.finetune import FinetuneConfig, finetune
    from ..tasks.spec import parse_column_overrides

    cfg = FinetuneConfig(
        task=args.task, train=args.train, val=args.val, test=args.test, out=args.out, init=args.init,
        no_pretrain=args.no_pretrain, preset=args.preset, tokenizer=args.tokenizer,
        columns=parse_column_overrides(args.column), regression=args.regression, label_base=args.label_base,
        lm_coef=args.lm_coef, transfer_layers=args.transfer_layers, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, clf_pdrop=args.clf_pdrop, max_len=args.max_len, metric=args.metric,
        evals_per_epoch=args.evals_per_epoch, seed=args.seed, device=args.device, precision=args.precision,
        threads=args.threads, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
    )
    summary = finetune(cfg)
    if "rank" in summary:  # not rank 0 of a torchrun job: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if summary.get("stopped_by"):
        print(f"gptkit finetune: stopped by {summary['stopped_by']} after step {summary['steps']}; "
              f"continue with the same command plus --resume", file=sys.stderr)
    ex, cut = summary["examples"], summary["truncated"]
    print(f"task {summary['task']}: {summary['steps']} updates on {ex['train']} examples "
          f"({summary['seconds']:.1f} s); truncated: " + ", ".join(f"{k} {v}" for k, v in cut.items()))
    if summary.get("labels"):
        print(f"labels: {', '.join(summary['labels'])}")
    if "val" in summary:
        print(f"best by val {summary['metric']}: step {summary['best_step']}")
        print(f"val:  {format_metrics(summary['val'])}")
    if summary.get("test"):
        print(f"test: {format_metrics(summary['test'])}")
    print(f"model: {summary['best_dir']}")
    return 0
