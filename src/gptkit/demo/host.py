"""What this machine can do, measured at the start of the demo: the fp32 and bf16 matmul ceilings (for
the printed header) and which precision trains the demo's own model faster (`precision: auto`).

The choice is made on the demo's model and batch, not on the ceilings alone: on CPUs with bf16 matrix
units (Intel AMX, AVX512-BF16) a large matmul runs several times faster in bf16, but at small widths
the casts around each matmul can eat the gain; a few timed training steps of the real shape decide.
They are timed in CPU time of this process, not wall time: on a machine busy with other programs the
wall time of a step says more about the others than about bf16 (measured: a shared 2-core host timed
fp32 faster by wall clock while bf16 took 0.58x its CPU time).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

log = logging.getLogger(__name__)

BF16_MARGIN = 1.1
"""bf16 is chosen only when its steps are at least this much faster than fp32 (noise on a busy machine)."""


def _step_seconds(config, batch: int, precision: str, steps: int = 3) -> float:
    """Least CPU time (all threads of this process) of one training step (forward, LM loss, backward,
    AdamW) of a fresh model."""
    from ..model import GPT
    from ..training import build_optimizer
    from ..training.precision import MixedPrecision

    torch.manual_seed(0)
    model = GPT(config).train()
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.01)
    x = torch.randint(0, config.vocab_size, (batch, config.n_ctx))
    # The training loop's own precision policy and the model's own LM loss: the probe times the step
    # that pre-training will run, not a look-alike.
    policy = MixedPrecision(model, precision, "cpu")

    def step() -> None:
        with policy.forward():
            loss = model(x[:, :-1], targets=x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernel selection, allocator
    best = float("inf")
    for _ in range(steps):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best


def probe_host(precision: str, config, batch: int) -> dict[str, Any]:
    """The device (a CUDA GPU when there is one, else the CPU), its ceilings in GFLOP/s and the
    precision to use (`precision` unless it is 'auto')."""
    from ..training.perf import measure_matmul_flops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "fp32_gflops": round(measure_matmul_flops(device, torch.float32) / 1e9, 1),
        "bf16_gflops": round(measure_matmul_flops(device, torch.bfloat16) / 1e9, 1),
        "requested_precision": precision,
    }
    if precision != "auto":
        out["precision"], out["reason"] = precision, "set by the profile"
        return out
    if device != "cpu":
        out["precision"], out["reason"] = "bf16", "a GPU"
        return out
    fp32, bf16 = (_step_seconds(config, batch, p) for p in ("fp32", "bf16"))
    out["step_cpu_seconds"] = {"fp32": round(fp32, 4), "bf16": round(bf16, 4)}
    speedup = fp32 / bf16
    out["precision"] = "bf16" if speedup >= BF16_MARGIN else "fp32"
    out["reason"] = f"a training step of the demo's model took {1 / speedup:.2f}x the CPU time in bf16 as in fp32"
    log.info("precision: %s (%s)", out["precision"], out["reason"])
    return out
