"""Shared benchmark helpers: the hardware ceilings each benchmark measures in its own run, peak memory,
and the table/JSON output. Kept out of the library: nothing in `gptkit` depends on benchmarks."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def time_best(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(best, median) wall seconds of `fn()` over `repeats` calls. The best is the figure least
    disturbed by other processes on a shared machine; the median shows how noisy the run was."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2]


def matmul_ceiling(dtype: torch.dtype, n: int = 3072, repeats: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of a large square matmul (n x n @ n x n, 2n^3 FLOPs): the practical peak that a
    training step, which is mostly matmuls, can approach. Best of `repeats` after one warm-up."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run() -> None:
        torch.matmul(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize()

    run()
    best, _ = time_best(run, repeats)
    return 2 * n**3 / best / 1e9


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """GB/s of a large tensor copy, counting read + write (the ceiling for elementwise work)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best, _ = time_best(lambda: dst.copy_(src), repeats)
    return 2 * n_bytes / best / 1e9


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: they mean nothing without it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A plain-text table. `columns` holds (key, header, format spec); missing values print '-'."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for i, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_results(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write `data` as JSON to `out`, or to results/<name>-<UTC timestamp>.json (and <name>-latest.json)."""
    data = {"benchmark": name, "utc": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    text = json.dumps(data, indent=2) + "\n"
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS_DIR / f"{name}-{stamp}.json"
        (RESULTS_DIR / f"{name}-latest.json").write_text(text, encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
