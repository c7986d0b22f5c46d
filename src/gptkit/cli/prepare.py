"""`gptkit prepare INPUTS... --tokenizer TOK --out DIR`: text -> token shards for pre-training."""

from __future__ import annotations

import argparse
import sys

from .options import add_options, build

# PrepareOptions' fields with a flag (defaults, checks and help declared there).
FIELDS = ("val_fraction", "shard_tokens", "workers", "seed", "text_field", "doc_split", "min_tokens", "overwrite")


def register(subparsers) -> None:
    from ..data.prepare import PrepareOptions

    p = subparsers.add_parser("prepare", help="tokenize text files / directories / .jsonl (optionally .gz) into token shards")
    p.add_argument("inputs", nargs="+", help="text files, .jsonl files, or directories (searched recursively for *.txt, *.jsonl, *.gz)")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json, a directory holding one, or vocab+merges files")
    p.add_argument("--out", required=True, help="corpus directory to create (meta.json + train_*.bin / val_*.bin)")
    add_options(p, PrepareOptions, FIELDS)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import PrepareOptions, prepare_corpus, summary_line

    options = build(PrepareOptions, args, FIELDS, show_progress=False if args.quiet else None)
    meta = prepare_corpus(args.inputs, args.tokenizer, args.out, options)
    print(f"wrote {args.out}: {summary_line(meta)}")
    if meta["val_split"] == "tail":
        # --doc-split blank-line is advice only to someone not already using it.
        remedy = "a larger --val-fraction" if options.doc_split == "blank-line" else \
            "--doc-split blank-line or a larger --val-fraction"
        print("note: no whole document fell in the validation split; its tokens are the tail of the training "
              f"stream (use {remedy} for a split by document)", file=sys.stderr)
    return 0
