"""`gptkit demo [--quick]`: the whole GPT recipe on built-in data, with a results table (docs/demo.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="fetch data, pre-train a small GPT, fine-tune with vs without pre-training, report",
        description="Runs the paper's recipe end to end on built-in data (12-16 minutes on a 2-core CPU with bf16 units, "
                    "about an hour without; --quick about 2-5). Re-running the same command resumes an interrupted demo.")
    p.add_argument("--quick", action="store_true", help="a smaller, 2-5 minute version")
    p.add_argument("--profile", choices=("default", "quick", "large", "test"), default=None,
                   help="settings profile: default (12-16 min on 2 CPU cores with bf16 units), quick (--quick), large (for a GPU or a "
                        "many-core machine: 6 x 512, n_ctx 512, all labelled examples), test (seconds, for the test suite)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="dataset cache (default $GPTKIT_CACHE, else $XDG_CACHE_HOME/gptkit, else ~/.cache/gptkit)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core); on a machine shared with "
                        "other jobs, 1 avoids threads spinning against each other")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import Demo, DemoInterrupted, get_profile

    profile = args.profile or ("quick" if args.quick else "default")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            from ..errors import GptkitError

            raise GptkitError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    demo = Demo(get_profile(profile), args.out, cache_dir=args.cache_dir,
                progress=not args.quiet and sys.stderr.isatty())
    try:
        results = demo.run()
    except DemoInterrupted as e:
        print(f"gptkit demo: {e}; the checkpoint is saved: run the same command again to resume",
              file=sys.stderr)
        from ..training.signals import exit_status

        return exit_status(e.signal_name) if e.signal_name else 130
    print(results["table"])
    print(f"\nresults: {args.out / 'results.json'}  table: {args.out / 'results.md'}  plots: {args.out / 'plots'}")
    return 0
