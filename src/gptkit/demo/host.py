"""What this machine can do, measured at the start of the demo: the fp32 and bf16 matmul ceilings (for
the printed header) and the precision every training stage uses.

`precision: auto` is decided by the training loop's own decider (`training.precision.choose_precision`,
the one `--precision auto` of pretrain and finetune uses): a few timed training steps of the demo's
model at its pre-training batch, in CPU time. The ceilings alone do not decide it (see there).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def probe_host(precision: str, config, batch: int) -> dict[str, Any]:  # noqa: ANN001 (GPTConfig)
    """The device (a CUDA GPU when there is one, else the CPU), its ceilings in GFLOP/s and the
    precision to use (`precision` unless it is 'auto')."""
    from ..training.perf import measure_matmul_flops
    from ..training.precision import choose_precision

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
    choice = choose_precision("auto", device, config, (batch, config.n_ctx))
    out["precision"], out["reason"] = choice.precision, choice.reason
    if choice.measured is not None:
        out.update(choice.measured)
    log.info("precision: %s (%s)", out["precision"], out["reason"])
    return out
