"""`gptkit evaluate MODEL_DIR --data F`: every metric of a fine-tuned task model on a labelled file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import report_as_flags


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="metrics of a fine-tuned task model on a labelled file",
                              description="Accuracy, F1 and Matthews correlation (classes), accuracy (multiple "
                                          "choice), Pearson, Spearman and MSE (regression), and the mean task loss.")
    p.add_argument("model", type=Path, help="a fine-tuned task model directory, or a finetune run directory (its best/)")
    p.add_argument("--data", required=True, type=Path, help="labelled file, read with the model's task.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, help="token budget per sequence (default: as in training)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    report_as_flags(p, "evaluate", ("batch_size", "max_len", "device"))  # the library's checks name evaluate.<field>


def run(args: argparse.Namespace) -> int:
    from ..tasks.predict import evaluate

    result = evaluate(args.model, args.data, batch_size=args.batch_size, device=args.device, max_len=args.max_len,
                      progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['task']}: {result['examples']} examples ({result['truncated']} truncated)")
    for k, v in result.items():
        if k not in ("task", "examples", "truncated"):
            print(f"  {k:<10} {v:.4f}")
    return 0
