"""What this machine can do, measured at the start of the demo: the fp32 and bf16 matmul ceilings (for
the printed header) and the precision every training stage uses.

`precision: auto` is decided by the training loop's own decider (`training.precision.choose_precision`,
the one `--precision auto` of pretrain and finetune uses): a few timed training steps of the demo's
model at its pre-training batch, in CPU time. The ceilings alone do not decide it (see there).

The same timed step gives an estimate of the pre-training stage's wall time, printed before it starts,
with a warning where it alone would exceed `SLOW_PRETRAIN_SECONDS`: the default profile is sized for
about 5-6 minutes of pre-training on 2 cores with bf16 units (AMX, AVX512-BF16), and a CPU without
them (AVX2 only: fp32, at half the fp32 rate of a Zen 4 core) takes several times as long. A user on
such a machine learns it in the first minute, not after the fifteenth.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

SLOW_PRETRAIN_SECONDS = 600.0
"""A pre-training estimate above this (10 minutes) is printed as a warning: the demo will take well
over the 15 minutes its default profile is sized for."""


def probe_host(precision: str, config, batch: int, steps: int = 0) -> dict[str, Any]:  # noqa: ANN001 (GPTConfig)
    """The device (a CUDA GPU when there is one, else the CPU), its ceilings in GFLOP/s, the
    precision to use (`precision` unless it is 'auto') and, where a step was timed, the estimated
    wall seconds of `steps` pre-training steps."""
    from ..training.perf import measure_matmul_flops
    from ..training.precision import bf16_matmul_speed, choose_precision, cpu_emulates_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # On a CPU that emulates bf16 its large-matmul ceiling is not measured: one product takes seconds
    # there (about 5 s at the probe's size on an AVX2-only AMD EPYC) to confirm what the small matmul
    # of `bf16_matmul_speed` already showed; the header says "emulated" instead (demo/report.py).
    emulated = device == "cpu" and cpu_emulates_bf16()
    out: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "fp32_gflops": round(measure_matmul_flops(device, torch.float32) / 1e9, 1),
        "bf16_gflops": None if emulated else round(measure_matmul_flops(device, torch.bfloat16) / 1e9, 1),
        "requested_precision": precision,
    }
    if device == "cpu":
        out["bf16_matmul_speed"] = round(bf16_matmul_speed(), 3)

    if precision != "auto":
        out["precision"], out["reason"] = precision, "set by the profile"
        return out
    choice = choose_precision("auto", device, config, (batch, config.n_ctx))
    out["precision"], out["reason"] = choice.precision, choice.reason
    if choice.measured is not None:
        out.update(choice.measured)
    log.info("precision: %s (%s)", out["precision"], out["reason"])
    step_cpu = out.get("step_cpu_seconds", {}).get(out["precision"])
    if step_cpu is not None and steps:
        estimate = steps * step_cpu / out["threads"]  # CPU seconds over the threads: wall time when they all work
        out["pretrain_estimate_seconds"] = round(estimate, 3)
        said = (f"pre-training estimate: about {estimate / 60:.0f} min for {steps:,} steps "
                f"({step_cpu:.2f} s of CPU time per step measured, {out['threads']} threads)")
        if estimate > SLOW_PRETRAIN_SECONDS:
            log.warning("%s: this machine is slower than the profile was sized for, and the demo will take "
                        "well over 15 minutes (`gptkit demo --quick` runs the same pipeline smaller)", said)
        else:
            log.info("%s", said)
    return out
