"""`gptkit zeroshot MODEL_DIR --task sentiment|acceptability|multiple_choice|winograd --data F`: the paper's
zero-shot heuristics on the pre-trained LM alone (SPEC section 6)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import report_as_flags


def zeroshot_tasks() -> tuple[str, ...]:
    from ..tasks.zeroshot import ZEROSHOT_TASKS

    return ZEROSHOT_TASKS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "zeroshot", help="zero-shot task accuracy of a pre-trained LM (paper section 5 heuristics)",
        description="sentiment: append --cue ('very') and compare the LM probability of each label word; "
                    "acceptability: mean token log-probability, thresholded (threshold chosen on --train); "
                    "multiple_choice: the answer with the highest mean token log-probability; "
                    "winograd (DPRD): fill the blank '_' with each option, the rest of the sentence's mean "
                    "log-probability decides.")
    p.add_argument("model", type=Path, help="a model directory or a pre-training run directory (its model/)")
    p.add_argument("--task", required=True, choices=zeroshot_tasks())
    p.add_argument("--data", required=True, type=Path, help="labelled file to score")
    p.add_argument("--train", type=Path, help="acceptability: labelled file to choose the threshold on")
    p.add_argument("--label-words", help="sentiment: one word per label in sorted label order ('negative,positive', "
                                         "the default for two labels) or LABEL=WORD pairs ('0=terrible,1=great')")
    p.add_argument("--cue", default="very", help="sentiment: word appended to each text (default 'very'; '' for none)")
    p.add_argument("--acceptable-label", help="acceptability: the label meaning acceptable (default: the one whose "
                                              "training sentences score higher)")
    p.add_argument("--column", action="append", metavar="FIELD=COLUMN", default=[], help="column override, as in finetune")
    p.add_argument("--label-base", type=int, default=0, help="multiple choice, winograd: index of the first candidate "
                                                             "in the labels (WinoGrande's answer column: 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    report_as_flags(p, "zeroshot", ("batch_size", "device"))  # the library's checks name zeroshot.<field>


def run(args: argparse.Namespace) -> int:
    from ..interop.loading import load_model_and_tokenizer
    from ..tasks import zeroshot
    from ..tasks.build import resolve_model_dir
    from ..tasks.predict import check_inference_options
    from ..tasks.spec import parse_column_overrides

    check_inference_options("zeroshot", batch_size=args.batch_size, device=args.device)
    gpt, tok = load_model_and_tokenizer(resolve_model_dir(args.model), device=args.device)
    columns = parse_column_overrides(args.column)
    common = {"batch_size": args.batch_size, "device": args.device, "columns": columns, "progress": not args.quiet}
    if args.task == "sentiment":
        result = zeroshot.sentiment(gpt, tok, args.data, label_words=args.label_words, cue=args.cue, **common)
    elif args.task == "acceptability":
        result = zeroshot.acceptability(gpt, tok, args.data, train=args.train, acceptable_label=args.acceptable_label, **common)
    elif args.task == "winograd":
        result = zeroshot.winograd(gpt, tok, args.data, label_base=args.label_base, **common)
    else:
        result = zeroshot.multiple_choice(gpt, tok, args.data, label_base=args.label_base, **common)
    report = {"task": args.task, **result.details, **result.metrics}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"zero-shot {args.task} on {args.data}: {result.details['examples']} examples")
    for k, v in report.items():
        if k not in ("task", "examples"):
            print(f"  {k:<16} {v:.4f}" if isinstance(v, float) else f"  {k:<16} {v}")
    return 0
