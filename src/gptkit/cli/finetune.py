"""`gptkit finetune --task TYPE (or --glue NAME) --train F --val F --init DIR --out RUN_DIR`: supervised
fine-tuning with the paper's input transformations and auxiliary LM loss (SPEC section 4)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .options import FLAGS_ATTR, add_options, build

# FinetuneConfig's fields with a flag (their defaults, checks and help are declared there).
FIELDS = ("task", "glue", "train", "val", "test", "out", "init", "no_pretrain", "preset", "tokenizer", "regression",
          "label_base", "lm_coef", "fresh_task_tokens", "transfer_layers", "epochs", "max_steps", "batch_size", "group_by_length", "lr", "warmup",
          "weight_decay", "grad_clip", "clf_pdrop", "max_len", "metric", "evals_per_epoch", "log_every", "seed",
          "device", "precision", "parallel", "threads")


def add_column_args(p: argparse.ArgumentParser) -> None:
    from ..tasks import task_type, task_type_names

    fields = " | ".join(", ".join(task_type(name).fields[:-1]) for name in task_type_names())
    p.add_argument("--column", action="append", metavar="FIELD=COLUMN", default=[],
                   help="read FIELD from COLUMN (repeatable), e.g. text=review, label=stars, choices=e0,e1,e2 "
                        f"(fields: {fields}; label)")


def register(subparsers) -> None:
    from ..tasks.config import FinetuneConfig

    p = subparsers.add_parser(
        "finetune", help="fine-tune a (pre-trained) GPT on a classification, entailment, similarity or multiple-choice task",
        description="Fine-tune with the paper's input transformations and L = task loss + lm_coef x LM loss. "
                    "Defaults are the paper's (lr 6.25e-5, batch 32, 3 epochs, warmup 0.2%, lm_coef 0.5). "
                    "See docs/finetuning.md.")
    add_options(p, FinetuneConfig, FIELDS, defaults={"out": dataclasses.MISSING})
    add_column_args(p)
    add_options(p, FinetuneConfig, ("resume", "overwrite"), group=p.add_mutually_exclusive_group())
    # --column fills FinetuneConfig.columns (a refused resume names it)
    p.set_defaults(**{FLAGS_ATTR: {**p.get_default(FLAGS_ATTR), ("FinetuneConfig", "columns"): "--column"}})
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def run(args: argparse.Namespace) -> int:
    from ..tasks.config import FinetuneConfig
    from ..tasks.finetune import finetune
    from ..tasks.spec import parse_column_overrides
    from ..training.signals import exit_status

    cfg = build(FinetuneConfig, args, (*FIELDS, "resume", "overwrite"),
                columns=parse_column_overrides(args.column), progress=not args.quiet)
    summary = finetune(cfg)
    if "rank" in summary:  # not rank 0 of a torchrun job: rank 0 reports, every rank exits alike
        return exit_status(summary["stopped_by"]) if summary.get("stopped_by") else 0
    if summary.get("stopped_by"):  # nothing is reported as a result: the run is not finished
        print(f"gptkit finetune: stopped by {summary['stopped_by']} after step {summary['steps']}; checkpoint "
              f"saved; continue with the same command plus --resume", file=sys.stderr)
        return exit_status(summary["stopped_by"])
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    ex, cut = summary["examples"], summary["truncated"]
    glue = f" (GLUE {summary['glue']})" if summary.get("glue") else ""
    print(f"task {summary['task']}{glue}: {summary['steps']} updates on {ex['train']} examples "
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
