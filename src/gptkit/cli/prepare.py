"""`gptkit prepare INPUTS... --tokenizer TOK --out DIR`: text -> token shards for pre-training."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="tokenize text files / directories / .jsonl (optionally .gz) into token shards")
    p.add_argument("inputs", nargs="+", help="text files, .jsonl files, or directories (searched recursively for *.txt, *.jsonl, *.gz)")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json, a directory holding one, or vocab+merges files")
    p.add_argument("--out", required=True, help="corpus directory to create (meta.json + train_*.bin / val_*.bin)")
    p.add_argument("--val-fraction", type=float, default=0.005, help="share of documents held out for validation")
    p.add_argument("--shard-tokens", type=int, default=50_000_000, help="tokens per shard file (bounds memory)")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: one per CPU core; 1: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation draw")
    p.add_argument("--text-field", default="text", help="field holding the document in .jsonl inputs")
    p.add_argument("--doc-split", choices=("file", "blank-line"), default="file",
                   help="plain text: one document per file, or one per blank-line-separated block")
    p.add_argument("--min-tokens", type=int, default=None,
                   help="refuse a corpus with fewer training tokens than this (e.g. one context window, n_ctx + 1)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import PrepareOptions, prepare_corpus, summary_line

    options = PrepareOptions(
        val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, workers=args.workers, seed=args.seed,
        text_field=args.text_field, doc_split=args.doc_split, min_tokens=args.min_tokens,
        overwrite=args.overwrite, show_progress=False if args.quiet else None,
    )
    meta = prepare_corpus(args.inputs, args.tokenizer, args.out, options)
    print(f"wrote {args.out}: {summary_line(meta)}")
    if meta["val_split"] == "tail":
        print("note: no whole document fell in the validation split; its tokens are the tail of the training "
              "stream (use --doc-split blank-line or a larger --val-fraction for a split by document)",
              file=sys.stderr)
    return 0
