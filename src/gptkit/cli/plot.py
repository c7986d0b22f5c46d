"""`gptkit plot RUN_DIR`: training loss, validation loss and learning rate against step, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="draw loss / val-loss / lr curves of a run directory to a PNG")
    p.add_argument("run_dir", type=Path, help="a run directory holding metrics.jsonl")
    p.add_argument("--out", type=Path, help="image file to write, in the format its suffix names: .png, .svg, .pdf, "
                                            ".jpg, ... (default RUN_DIR/curves.png); its directory must exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import GptkitError
    from ..training.metrics import METRICS_FILE
    from ..training.plot import plot_run

    if not (Path(args.run_dir) / METRICS_FILE).is_file():
        raise GptkitError(f"{args.run_dir}: no metrics.jsonl (not a training run directory?)")
    out = plot_run(args.run_dir, args.out)
    print(out)
    return 0
