"""Curves of a run: training loss and validation loss (left), learning rate (right), against step.

matplotlib is optional (the `plot` extra) and imported only here, with the Agg backend so it works on
machines without a display."""

from __future__ import annotations

from pathlib import Path

from ..errors import GptkitError
from ..interop.weights import atomic_write_bytes
from .metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GptkitError("plotting needs matplotlib: pip install 'gptkit[plot]'") from None
    import io

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    # A fine-tuning run logs its objective (task + lm_coef x LM) as `loss` and the task part alone as
    # `task_loss`; its validation loss is task-only, so the comparable train curve is `task_loss`.
    key = "task_loss" if any(r.get("task_loss") is not None for r in records) else "loss"
    train = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    lr = [(r["step"], r["lr"]) for r in records if r.get("lr") is not None]
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
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out = Path(out) if out is not None else run_dir / "curves.png"
    atomic_write_bytes(out, buf.getvalue())
    return out
