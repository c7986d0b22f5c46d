"""`gptkit predict MODEL_DIR --data F --out preds.jsonl|.csv`: a label and probabilities per row."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import report_as_flags


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="write a fine-tuned task model's predictions (with probabilities)",
                              description="One output row per input row: `prediction` (a label, a candidate "
                                          "index, or a real value), `p_<label>` probabilities, `gold` when the "
                                          "file has labels, and whether the input was truncated.")
    p.add_argument("model", type=Path, help="a fine-tuned task model directory, or a finetune run directory (its best/)")
    p.add_argument("--data", required=True, type=Path, help="input file (labels optional)")
    p.add_argument("--out", required=True, type=Path, help="predictions file: .jsonl or .csv")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, help="token budget per sequence (default: as in training)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    report_as_flags(p, "predict", ("batch_size", "max_len", "device"))  # the library's checks name predict.<field>


def run(args: argparse.Namespace) -> int:
    from ..tasks.predict import predict

    result = predict(args.model, args.data, args.out, batch_size=args.batch_size, device=args.device, max_len=args.max_len,
                      progress=not args.quiet)
    print(f"wrote {result['rows']} predictions to {result['out']} ({result['truncated']} inputs truncated)")
    return 0
