"""Training logs: one JSON line per logged step in RUN_DIR/metrics.jsonl, and TensorBoard event
files when the `tensorboard` package is importable (optional, imported lazily)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..errors import GptkitError
from ..interop.weights import atomic_write_bytes

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends records to metrics.jsonl (flushed per line, so a crash loses at most the last one)."""

    def __init__(self, run_dir: str | Path | None, *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE if run_dir is not None else None
        self._tb = None
        if run_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
            except ImportError:
                log.debug("tensorboard is not installed; metrics go to %s only", self.path)
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint we resume from, so the log (and the plot)
        shows each step once."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n" if kept else "").encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        clean = {k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in record.items()}
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(clean, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # disk full, a file-size limit: one line, the checkpoints stay as they are
            raise GptkitError(f"{self.path}: cannot append the metrics of step {record.get('step')} "
                              f"({e.strerror or e})") from None
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of RUN_DIR/metrics.jsonl (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN/inf; keep the file parseable by every reader
    return x if math.isfinite(x) else None
