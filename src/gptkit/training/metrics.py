"""Training logs: one JSON line per logged step in RUN_DIR/metrics.jsonl, and TensorBoard event
files when the `tensorboard` package is importable (optional, imported lazily)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import GptkitError

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
        for line in self.path.read_bytes().splitlines():
            record = _parse(line)  # None: a line cut short by a kill
            if isinstance(record, dict) and not (isinstance(record.get("step"), int | float)
                                                 and record["step"] > step):
                kept.append(line)
        atomic_write_bytes(self.path, b"\n".join(kept) + b"\n" if kept else b"")

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
    """All records of RUN_DIR/metrics.jsonl. A last line cut short by a kill (no newline after it) is
    skipped quietly; any other line that is not a JSON object is skipped with a warning naming it."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise GptkitError(f"{path}: cannot read ({e.strerror or e})") from None
    records, bad = [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse(line)
        if isinstance(record, dict):
            records.append(record)
        elif not (lineno == len(lines) and record is None):  # the unterminated last line: a kill's
            bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        log.warning("%s: skipped %d line(s) that are not a JSON object (line %s)", path, len(bad), shown)
    return records


def _parse(line: bytes) -> Any:
    """A line's JSON value; None if it is not JSON (or not UTF-8)."""
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN/inf; keep the file parseable by every reader
    return x if math.isfinite(x) else None
