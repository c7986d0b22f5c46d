"""Curves of a run: training loss and validation loss (left), learning rate (right), against step.

matplotlib is optional (the `plot` extra) and imported only here, with the Agg backend so it works on
machines without a display."""

from __future__ import annotations

import math
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import GptkitError
from .metrics import read_metrics

# The formats `--out`'s suffix may name (savefig writes the one it names). Not matplotlib's raw/rgba
# (not image files a viewer opens) nor pgf (LaTeX code, and it needs a TeX installation).
FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "tif", "tiff", "eps", "ps")


def check_out(out: str | Path) -> Path:
    """`out` as a file plot_run can write, else one GptkitError: its directory must exist (it is not
    created), it must not be a directory, and its suffix must name an image format (FORMATS)."""
    out = Path(out)
    if out.is_dir():
        raise GptkitError(f"{out}: is a directory; give a file name (e.g. {out / 'curves.png'})")
    if not out.parent.is_dir():
        raise GptkitError(f"{out}: directory {out.parent} does not exist")
    if out.suffix.lower().lstrip(".") not in FORMATS:
        raise GptkitError(f"{out}: not an image file name; end it in {', '.join('.' + f for f in FORMATS)} "
                          f"(the format follows the suffix)")
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw RUN_DIR/metrics.jsonl's curves to `out` (default RUN_DIR/curves.png); returns the path."""
    run_dir = Path(run_dir)
    out = check_out(out if out is not None else run_dir / "curves.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GptkitError("plotting needs matplotlib: pip install 'gptkit[plot]'") from None
    import io

    records = [r for r in read_metrics(run_dir) if _number(r.get("step"))]
    # A fine-tuning run logs its objective (task + lm_coef x LM) as `loss` and the task part alone as
    # `task_loss`; its validation loss is task-only, so the comparable train curve is `task_loss`.
    key = "task_loss" if any(_number(r.get("task_loss")) for r in records) else "loss"
    train = [(r["step"], r[key]) for r in records if _number(r.get(key))]
    val = [(r["step"], r["val_loss"]) for r in records if _number(r.get("val_loss"))]
    lr = [(r["step"], r["lr"]) for r in records if _number(r.get("lr"))]
    if not train and not val:
        raise GptkitError(f"{run_dir / 'metrics.jsonl'}: no loss values to plot")
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train task loss" if key == "task_loss" else "train loss", linewidth=1)
    if val:
        ax_loss.plot(*zip(*val), "o-", label="validation task loss" if key == "task_loss" else "validation loss",
                     markersize=3)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("task loss" if key == "task_loss" else "cross-entropy (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if lr:
        ax_lr.plot(*zip(*lr), color="tab:green")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix.lower().lstrip("."), dpi=100)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out
