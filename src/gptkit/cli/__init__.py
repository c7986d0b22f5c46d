"""`gptkit` command line: a thin map from subcommand to library function.

Each module named in COMMAND_MODULES has `register(subparsers)`, which adds its subcommand(s) and sets
`func(args) -> int` on the parser. Heavy imports happen inside those functions, so `gptkit --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from ..errors import GptkitError
from ..options import OptionError
from .options import IntermixedParser, flag_message

# In the order of the recipe: data and tokenizer, pre-training, fine-tuning, use, inspection.
COMMAND_MODULES = (
    "demo",
    "reproduce",
    "data",
    "tokenizer",
    "prepare",
    "pretrain",
    "plot",
    "finetune",
    "baseline",
    "evaluate",
    "predict",
    "zeroshot",
    "generate",
    "serve",
    "inspect",
    "info",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptkit",
        description="GPT (Radford et al., 2018): pre-train, fine-tune, generate, serve, inspect.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # every command's parser (and the ones nested under it) takes its options and positionals in any order
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=IntermixedParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so `finally` blocks and atomic writers clean up."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():  # training installs its own, gentler one
        # SIGINT too: a shell starts background jobs with SIGINT ignored, and a command started so
        # would then ignore `kill -INT` where the user (or a script) expects status 130.
        previous = (signal.signal(signal.SIGTERM, _terminate),
                    signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        if "WORLD_SIZE" in os.environ:  # launched by torchrun: join the job (gptkit.training.distributed)
            from ..training.distributed import distributed_session

            with distributed_session():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except OptionError as e:  # the library names the field; the user typed a flag
        print(f"gptkit {args.command}: error: {flag_message(e, args)}", file=sys.stderr)
        return 2
    except GptkitError as e:
        print(f"gptkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"gptkit {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"gptkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `gptkit inspect trace ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous is not None:  # main() called in-process (tests, scripts) leaves no handler behind
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


if __name__ == "__main__":
    sys.exit(main())
