"""Throughput accounting: a quick matmul probe for the device's peak FLOP/s, and MFU.

MFU (model FLOPs utilisation) = achieved training FLOP/s / peak FLOP/s, with the training FLOPs per
token of the model (for GPT: `gptkit.model.training_flops_per_token`). The probe measures the peak
instead of trusting a datasheet, because on a shared CPU the usable ceiling is what a large matmul
actually reaches here and now.
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)


def measure_matmul_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                         size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul (best of a few timed runs of about `seconds` in all)."""
    device = torch.device(device)
    # Its own generator: drawing from the global one would shift every later dropout mask and make a
    # run depend on whether the probe ran (with --peak-flops it does not) and a resume inexact.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up: first call pays for kernel selection (oneDNN compiles its AMX kernels here)
    sync()
    # On a CPU, products timed one at a time until the budget is spent, at least one: a dtype the CPU
    # emulates (bf16 without bf16 units, about 1 GFLOP/s at 1024^3) takes seconds per product, and
    # rounds of several would take half a minute to show what one product shows. A GPU's product takes
    # microseconds, so it is timed in rounds of 4 between synchronisations.
    per_round = 4 if device.type == "cuda" else 1
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        for _ in range(per_round):
            a @ b
        sync()
        best = max(best, per_round * 2 * size**3 / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    log.debug("matmul probe: %.1f GFLOP/s (%s, %s, %d^3)", best / 1e9, device, dtype, size)
    return best


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    return flops_per_token * tokens_per_second / peak_flops if peak_flops > 0 else float("nan")
