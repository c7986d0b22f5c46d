"""Training precision: fp32, or bf16 with fp32 master weights; `auto` measures which pays here.

bf16 here is not torch.autocast. Autocast keeps the activations fp32 between matmuls (LayerNorm,
residual adds, GELU, dropout all run on fp32 tensors) and casts every weight and every activation to
bf16 at each matmul, so on a CPU whose bf16 matmuls are fast (AMX) the casts and the fp32 memory
traffic decide the step. Instead, for the duration of a forward pass the module's weights are
replaced by bf16 copies made once (one cast per weight per micro-step, however often it is used:
the tied embedding/head is cast once), and the activations stay bf16 throughout. The copies are
autograd casts of the fp32 parameters, so the gradients arrive in the fp32 `.grad` of the master
weights, where clipping and the fused AdamW run in fp32 as before; checkpoints hold fp32 weights.
Accuracy-sensitive reductions stay fp32: LayerNorm keeps fp32 gains and biases and its CPU kernel
accumulates in fp32, softmax accumulates in fp32, and the LM loss (model/loss.py) computes its
log-softmax and sums in fp32.

`auto` (the default) picks bf16 on CUDA devices that support it, and on a CPU when a quick probe
measures bf16 matmuls at least `AUTO_MARGIN` times as fast as fp32 at the module's own matmul shape
(AMX Xeons: ~6x; AMD Zen 4 with AVX512-BF16: ~2x; CPUs without bf16 units: below 1x). The probe uses
its own random generator, so choosing does not change the run's random stream.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import GptkitError
from .ranks import any_across_ranks

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
AUTO_MARGIN = 1.5
"""bf16 must measure this many times fp32's matmul rate for `auto` to pick it: below that, the
memory-bound part of a step (which bf16 speeds up by at most 2x) and the rounding are not worth it."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    """'fp32' or 'bf16': what the run uses."""
    reason: str
    """Why, in words (printed at the start of a run)."""


def probe_matmul_rates(device: torch.device | str, k: int, n: int, rows: int = 1024,
                       rounds: int = 5) -> tuple[float, float]:
    """(fp32, bf16) FLOP/s of a (rows, k) @ (k, n) matmul here: the best of `rounds` alternating
    timings of each, so that a neighbour's burst of load falls on both alike."""
    return _probe(str(torch.device(device)), k, n, rows, rounds)


@functools.cache
def _probe(device: str, k: int, n: int, rows: int, rounds: int) -> tuple[float, float]:
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)  # never the global generator: resume exactness
    a32 = torch.randn(rows, k, generator=gen).to(dev)
    b32 = torch.randn(k, n, generator=gen).to(dev)
    pairs = ((a32, b32), (a32.bfloat16(), b32.bfloat16()))
    for a, b in pairs:
        a @ b  # the first call pays for kernel selection (oneDNN builds its AMX kernels on first use)
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, (a, b) in enumerate(pairs):
            best[i] = max(best[i], _rate(a, b))
    return best[0], best[1]


def _rate(a: torch.Tensor, b: torch.Tensor, repeats: int = 2) -> float:
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)
    return repeats * 2 * a.size(0) * a.size(1) * b.size(1) / (time.perf_counter() - start)


def probe_shape(module: nn.Module) -> tuple[int, int]:
    """(in, out) of the module's largest weight matrix, out capped at 4096 (a probe, not a benchmark)."""
    shapes = [p.shape for p in module.parameters() if p.dim() == 2]
    if not shapes:
        return 256, 256
    out, inp = max(shapes, key=lambda s: s[0] * s[1])
    return int(inp), int(min(out, 4096))


def choose_precision(requested: str, module: nn.Module, device: torch.device | str) -> PrecisionChoice:
    """Resolve 'auto' for this module on this device (see the module docstring); 'fp32'/'bf16' stay."""
    if requested not in PRECISIONS:
        raise GptkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return PrecisionChoice(requested, "as asked")
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{torch.cuda.get_device_name(device)} supports bf16")
        return PrecisionChoice("fp32", f"{torch.cuda.get_device_name(device)} has no bf16 support")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"no bf16 probe for {device.type} devices")
    k, n = probe_shape(module)
    fp32, bf16 = probe_matmul_rates(device, k, n)
    ratio = bf16 / fp32 if fp32 > 0 else 0.0
    verdict = "bf16" if ratio >= AUTO_MARGIN else "fp32"
    return PrecisionChoice(verdict, f"bf16 matmul measured {ratio:.1f}x fp32 at 1024x{k}x{n} on this CPU "
                                    f"({bf16 / 1e9:.0f} vs {fp32 / 1e9:.0f} GFLOP/s; bf16 needs {AUTO_MARGIN}x)")


def resolve_precision(requested: str, module: nn.Module, device: torch.device | str,
                      resume_from: str | Path | None = None, saved: str | None = None) -> PrecisionChoice:
    """The run's precision: a resumed 'auto' run keeps what its checkpoint used (`saved`), so that
    resuming on a busier or different machine continues the same computation."""
    if requested == "auto" and resume_from is not None and saved in ("fp32", "bf16"):
        return PrecisionChoice(saved, f"as {resume_from} used")
    return choose_precision(requested, module, device)


class MixedPrecision:
    """What a precision means for the loop: `with policy.forward():` around a forward pass."""

    def __init__(self, module: nn.Module, precision: str, device: torch.device | str) -> None:
        if precision not in ("fp32", "bf16"):
            raise GptkitError(f"precision must be 'fp32' or 'bf16' once resolved, got {precision!r}")
        self.module = module
        self.precision = precision
        self.device = torch.device(device)
        # Parameters that are not plain tensors (FSDP's DTensor shards) cannot be swapped for casts:
        # those models fall back to autocast, which casts per use.
        plain = all(type(p.data) is torch.Tensor for p in module.parameters())
        self.mode = "fp32" if precision == "fp32" else ("bf16-weights" if plain else "autocast")
        self._slots = _cast_slots(module) if self.mode == "bf16-weights" else []

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """The module computes in this precision inside the block (backward may run after it)."""
        if self.mode == "fp32":
            yield
        elif self.mode == "autocast":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            with _swapped(self._slots):
                yield


def _cast_slots(module: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """(owner, name, parameter) for every parameter to run in bf16: all floating ones except
    LayerNorm's gains and biases, which stay fp32 (the normalisation is computed in fp32)."""
    slots = []
    for mod in module.modules():
        if isinstance(mod, nn.LayerNorm):
            continue
        for name, p in mod._parameters.items():
            if p is not None and p.is_floating_point() and p.dtype != torch.bfloat16:
                slots.append((mod, name, p))
    return slots


@contextlib.contextmanager
def _swapped(slots: list[tuple[nn.Module, str, nn.Parameter]]) -> Iterator[None]:
    """Each slot's parameter replaced by its bf16 autograd cast, made once even when tied (the token
    embedding is also the LM head); restored afterwards, in place so the parameter order is kept."""
    casts: dict[int, torch.Tensor] = {}
    for mod, name, p in slots:
        if id(p) not in casts:
            casts[id(p)] = p.to(torch.bfloat16)
        mod._parameters[name] = casts[id(p)]
    try:
        yield
    finally:
        for mod, name, p in slots:
            mod._parameters[name] = p


def precision_for_run(config, module: nn.Module, saved: str | None = None):  # noqa: ANN001, ANN201 (TrainConfig)
    """The loop's hook: resolve `config.precision` on `config.device` (`saved`: the precision of the
    checkpoint being resumed), say which and why, and return the config holding the resolved value
    (what checkpoints record) with the policy to run forward passes under."""
    device = torch.device(config.device)
    choice = resolve_precision(config.precision, module, device, "the checkpoint" if saved else None, saved)
    if config.precision == "auto" and any_across_ranks(choice.precision == "fp32", device):
        # every rank probes its own CPU; they must agree, and fp32 is the safe side of a split verdict
        choice = PrecisionChoice("fp32", choice.reason if choice.precision == "fp32" else "another rank measured fp32")
    log.info("precision: %s (%s%s)", choice.precision, "auto: " if config.precision == "auto" else "", choice.reason)
    return config.replace(precision=choice.precision), MixedPrecision(module, choice.precision, device)
