"""`gptkit reproduce [--quick] [--init DIR]`: Table 5 and Figure 2 of the GPT paper on built-in data
(docs/reproduce.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="the paper's Table 5 ablations and Figure 2 (transfer, zero-shot) on built-in data",
        description="Reuses a pre-trained LM (--init: a demo folder, a pre-training run or a model directory) or "
                    "pre-trains one with the demo's data, then fine-tunes the Table 5 arms on the built-in and derived "
                    "tasks, the Figure 2 transfer runs, and the zero-shot heuristics on the pre-training checkpoints. "
                    "Re-running the same command resumes an interrupted reproduction.")
    p.add_argument("--quick", action="store_true", help="a smaller, about 10-minute version (one seed)")
    p.add_argument("--profile", choices=("default", "quick", "test"), default=None,
                   help="settings profile (--quick is --profile quick; 'test' is seconds, for the test suite)")
    p.add_argument("--init", type=Path, default=None,
                   help="the LM to reuse: a `gptkit demo` output folder, a pre-training run directory (its kept "
                        "checkpoints give the zero-shot curve) or a model directory; default: pre-train one here")
    p.add_argument("--out", type=Path, default=Path("reproduce-out"), help="output folder (default ./reproduce-out)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="dataset cache (default $GPTKIT_CACHE, else $XDG_CACHE_HOME/gptkit, else ~/.cache/gptkit)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a machine shared with other jobs, 1 is often faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def in_process_runner(argv: list[str]) -> tuple[int, str]:
    """Run one `gptkit` command in this process (the reproduction runs dozens: no start-up each time)."""
    import contextlib
    import io

    from . import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    from ..errors import GptkitError
    from ..reproduce import ReproduceInterrupted, Reproduction, get_profile

    if args.threads is not None and args.threads < 1:
        raise GptkitError(f"--threads must be at least 1, got {args.threads}")
    if args.init is not None and not args.init.exists():
        raise GptkitError(f"--init {args.init}: no such file or directory")
    profile = args.profile or ("quick" if args.quick else "default")
    repro = Reproduction(get_profile(profile), args.out, init=args.init, cache_dir=args.cache_dir, threads=args.threads,
                         progress=not args.quiet and sys.stderr.isatty(), runner=in_process_runner)
    try:
        results = repro.run()
    except ReproduceInterrupted as e:
        from ..training.signals import exit_status

        print(f"gptkit reproduce: {e}; what it finished is saved: run the same command again to resume",
              file=sys.stderr)
        return exit_status(e.signal_name) if e.signal_name else 130
    print(results["table"])
    print(f"\nresults: {args.out / 'results.json'}  table: {args.out / 'results.md'}  figures: {args.out / 'figures'}  "
          f"commands: {args.out / 'commands.sh'}")
    return 0
