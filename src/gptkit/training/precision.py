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

`auto` (the default) picks bf16 on CUDA devices that support it, and on a CPU when it measures so:
`choose_precision` times the step that will run, on a fresh copy of the model's shape (the model's
own LM loss, forward and backward under this module's `MixedPrecision`, then the fused AdamW step) in
both precisions, and takes bf16 when an fp32 step costs at least `BF16_MARGIN` times as much. On a
CPU without bf16 units torch emulates bf16 matmuls far slower than fp32 ones (measured on an AMD EPYC
with AVX2 only, no AVX-512: 17 GFLOP/s bf16 against 100 fp32 for the demo's products, a bf16 step
16x the CPU time of fp32), so a small matmul of each dtype is timed first (`bf16_matmul_speed`, about
0.2 s) and where bf16 runs at under `BF16_MATMUL_FLOOR` of fp32's rate only the fp32 step is timed:
timing the bf16 one there cost the demo half a minute to learn what the matmul showed at once. The
matmul ceilings alone do not otherwise decide it: on CPUs with bf16 units (AMX Xeons: ~6x fp32; Zen 4 with
AVX512-BF16: ~2x) a large matmul gains several times, but at small widths the casts and the memory-bound
rest of a step can eat the gain. Steps are timed in CPU time of this process (all its threads), not
wall time: on a machine busy with other programs the wall time of a step says more about the others
than about bf16 (measured on a shared 2-core host: wall clock timed fp32 faster while bf16 took 0.58x
its CPU time). A step larger than `PROBE_FLOPS` is timed on fewer rows (never less than one whole row,
whose length decides the attention cost and the matmuls' efficiency) and its forward/backward part scaled up to the real batch and accumulation; the optimizer step is timed as it
is. The probe draws nothing from the run's random stream, and its result is cached per model shape,
batch shape and thread count for the life of the process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import GptkitError
from ..model import GPT, GPTConfig, training_flops_per_token
from .optimizer import build_optimizer
from .ranks import any_across_ranks

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
BF16_MARGIN = 1.1
"""`auto` takes bf16 only when an fp32 training step costs at least this many times the CPU time of a
bf16 one: a smaller gain is within the noise of a shared machine and not worth bf16's rounding."""
BF16_MATMUL_FLOOR = 0.5
"""Where a small bf16 matmul runs at under this fraction of the fp32 rate, bf16 steps are not timed:
the CPU emulates bf16 (0.03x on an AVX2-only AMD EPYC, measured by `bf16_matmul_speed`) and no saving
elsewhere in a step makes up for it.
CPUs with bf16 units run it faster than fp32 (AMX ~6x, AVX512-BF16 ~2x), far above the floor."""
PROBE_FLOPS = 2.5e10
"""Training FLOPs of one timed probe step at most (the demo's model, 11 of its 32 rows: ~0.2 s of CPU
on 2 cores); a larger batch is timed on fewer rows and scaled."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    """'fp32' or 'bf16': what the run uses."""
    reason: str
    """Why, in words (printed at the start of a run)."""
    measured: dict[str, Any] | None = None
    """What the CPU probe measured, when it ran: `bf16_matmul_speed` (bf16's small-matmul rate over
    fp32's), `step_cpu_seconds` in each precision timed (fp32 only where bf16 is emulated), their
    `ratio` (bf16 / fp32, when both were timed), the micro-batch timed (`probe_rows` x
    `probe_seq_len`) and whether it was `scaled`."""


@dataclass(frozen=True)
class StepCosts:
    """CPU seconds (all threads of this process) of one training update, as `measure_step_costs` times it."""

    fp32: float
    bf16: float | None
    """None when bf16 was not timed (a CPU that emulates it: `BF16_MATMUL_FLOOR`)."""
    rows: int
    seq_len: int
    """The micro-batch timed (fewer rows than the run's when the run's is over PROBE_FLOPS)."""
    scaled: bool
    """True when the forward/backward times were scaled up to the run's batch."""

    @property
    def ratio(self) -> float:
        """bf16's cost as a fraction of fp32's (infinite when bf16 was not timed)."""
        return self.bf16 / self.fp32 if self.bf16 is not None and self.fp32 > 0 else float("inf")


def bf16_pays(costs: StepCosts) -> bool:
    """The decision itself: an fp32 update costs at least BF16_MARGIN times a bf16 one."""
    return costs.bf16 is not None and costs.fp32 >= BF16_MARGIN * costs.bf16


@functools.cache
def bf16_matmul_speed(size: int = 256, rounds: int = 5) -> float:
    """bf16's matmul rate over fp32's on this CPU: the least CPU time of a `size`^3 product in each
    dtype over `rounds` alternating timings after a warm-up, on one thread (about 0.2 s on an emulating
    CPU, a few ms elsewhere; cached for the process). Whether a core has bf16 units is a property of
    the core, and one thread keeps the timing clear of the other programs of a busy machine: with two
    threads, a product of a millisecond waits for whichever thread the neighbours have descheduled
    (measured, wall time: fp32 from 17 to 166 GFLOP/s; CPU time: a verdict of 0.49x where the quiet
    ratio is 0.02x). Draws nothing from the global random stream."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    pairs = {dtype: (a.to(dtype), b.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for round_ in range(rounds + 1):  # round 0 warms up (kernel selection)
            for dtype, (x, y) in pairs.items():
                start = time.process_time()
                x @ y
                if round_:
                    best[dtype] = min(best[dtype], time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    speed = best[torch.float32] / max(best[torch.bfloat16], 1e-9)
    log.debug("bf16 matmul speed: %.3fx fp32 (%d^3, one thread)", speed, size)
    return speed


def cpu_emulates_bf16() -> bool:
    """True on a CPU without bf16 units, where torch emulates bf16 matmuls at a small fraction of the
    fp32 rate (`bf16_matmul_speed` under `BF16_MATMUL_FLOOR`). The one test of it: the precision
    choice, the warning below, the demo's host probe and the training benchmark all ask here."""
    return bf16_matmul_speed() < BF16_MATMUL_FLOOR


def emulated_bf16_warning(device: torch.device | str) -> str | None:
    """What a run in bf16 tells its user on a CPU that emulates bf16 (asked for, or resumed from a
    checkpoint made on another machine); None where bf16 has units or the device is not a CPU."""
    if torch.device(device).type != "cpu" or not cpu_emulates_bf16():
        return None
    return (f"bf16 on a CPU without bf16 units (a bf16 matmul runs at {bf16_matmul_speed():.2f}x its fp32 rate "
            "here: torch emulates it): expect it many times slower than fp32")


def probe_shape(config: GPTConfig, rows: int, seq_len: int) -> tuple[int, int]:
    """The (rows, seq_len) to time: the run's micro-batch, cut to PROBE_FLOPS by rows, down to one row
    (at the gpt1 shape one 512-token row is ~4e11 FLOPs, a few seconds: a small price at the start of
    a run of hours, and a step of a few dozen tokens would time other kernels than the run's)."""
    per_row = training_flops_per_token(config.replace(n_ctx=seq_len)) * seq_len
    return max(1, min(rows, int(PROBE_FLOPS // per_row))), seq_len


def measure_step_costs(config: GPTConfig, rows: int, seq_len: int, accum: int = 1,
                       with_bf16: bool = True) -> StepCosts:
    """Time one update of a fresh model of `config` on a (rows, seq_len) micro-batch with `accum`
    accumulation, in fp32 and (`with_bf16`) in bf16 (cached: see the module docstring)."""
    prows, pseq = probe_shape(config, rows, seq_len)
    fb32, fb16, opt = _timed_parts(config, prows, pseq, torch.get_num_threads(), with_bf16)
    scale = accum * rows * seq_len / (prows * pseq)
    return StepCosts(fb32 * scale + opt, None if fb16 is None else fb16 * scale + opt, prows, pseq, scaled=scale != 1)


@functools.cache
def _timed_parts(config: GPTConfig, rows: int, seq_len: int, threads: int, with_bf16: bool = True,
                 rounds: int = 2) -> tuple[float, float | None, float]:
    """(fp32 forward+backward, bf16 forward+backward or None without `with_bf16`, optimizer step): the
    least CPU seconds of each over `rounds` alternating timings, after one untimed step in each
    precision (kernel selection, the allocator's first blocks)."""
    with torch.random.fork_rng(devices=[]):  # the run's random stream is untouched: resume exactness
        torch.manual_seed(0)
        model = GPT(config.replace(n_ctx=max(config.n_ctx, seq_len))).train()
        ids = torch.randint(0, config.vocab_size, (rows, seq_len + 1))
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01)
        policies = [MixedPrecision(model, p, "cpu") for p in (("fp32", "bf16") if with_bf16 else ("fp32",))]
        best = [float("inf")] * 3

        def step(policy: MixedPrecision) -> tuple[float, float]:
            start = time.process_time()
            with policy.forward():
                loss = model(ids[:, :-1], targets=ids[:, 1:])  # the model's own LM loss, as the run's
            loss.backward()
            middle = time.process_time()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return middle - start, time.process_time() - middle

        for policy in policies:
            step(policy)
        for _ in range(rounds):
            for i, policy in enumerate(policies):
                fb, opt = step(policy)
                best[i], best[2] = min(best[i], fb), min(best[2], opt)
    return best[0], best[1] if with_bf16 else None, best[2]


def choose_precision(requested: str, device: torch.device | str, config: GPTConfig | None = None,
                     shape: tuple[int, int] | None = None, accum: int = 1) -> PrecisionChoice:
    """Resolve 'auto' for a model of `config` trained on (rows, seq_len) micro-batches (`shape`;
    default one row of n_ctx) on `device` (see the module docstring); 'fp32'/'bf16' stay."""
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
    if config is None:
        return PrecisionChoice("fp32", "no GPT in the module to time a step of")
    rows, seq_len = shape or (1, config.n_ctx)
    speed, emulated = bf16_matmul_speed(), cpu_emulates_bf16()
    costs = measure_step_costs(config, rows, seq_len, accum, with_bf16=not emulated)
    verdict = "bf16" if bf16_pays(costs) else "fp32"
    timed = f"{costs.rows} x {costs.seq_len} tokens" + (f", scaled to {rows} x {seq_len}" if costs.scaled else "")
    if accum > 1:
        timed += f" x{accum} accumulation"
    if emulated:
        reason = (f"this CPU runs a bf16 matmul at {speed:.2f}x its fp32 rate (no bf16 units: torch emulates "
                  f"bf16), under the {BF16_MATMUL_FLOOR:.2f}x at which a bf16 step is worth timing")
    else:
        reason = (f"a training step of this model took {costs.ratio:.2f}x the CPU time in bf16 as in fp32 "
                  f"({timed}; bf16 needs at most {1 / BF16_MARGIN:.2f}x)")
    measured = {"bf16_matmul_speed": round(speed, 3),
                "step_cpu_seconds": {"fp32": round(costs.fp32, 4)} | ({} if emulated else {"bf16": round(costs.bf16, 4)}),
                "probe_rows": costs.rows, "probe_seq_len": costs.seq_len, "scaled": costs.scaled}
    if not emulated:
        measured["ratio"] = round(costs.ratio, 3)
    return PrecisionChoice(verdict, reason, measured)


def resolve_precision(requested: str, module: nn.Module, device: torch.device | str,
                      resume_from: str | Path | None = None, saved: str | None = None,
                      shape: tuple[int, int] | None = None, accum: int = 1) -> PrecisionChoice:
    """The run's precision: a resumed 'auto' run keeps what its checkpoint used (`saved`), so that
    resuming on a busier or different machine continues the same computation."""
    if requested == "auto" and resume_from is not None and saved in ("fp32", "bf16"):
        return PrecisionChoice(saved, f"as {resume_from} used")
    return choose_precision(requested, device, gpt_config(module), shape, accum)


def gpt_config(module: nn.Module) -> GPTConfig | None:
    """The config of the GPT inside `module` (the module itself, or a task model's trunk)."""
    return next((m.config for m in module.modules() if isinstance(m, GPT)), None)


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


def precision_for_run(config, module: nn.Module, saved: str | None = None,  # noqa: ANN001, ANN201 (TrainConfig)
                      shape: tuple[int, int] | None = None):
    """The loop's hook: resolve `config.precision` on `config.device` (`saved`: the precision of the
    checkpoint being resumed; `shape`: the (rows, seq_len) of a micro-batch, for the probe), say which
    and why, and return the config holding the resolved value (what checkpoints record) with the
    policy to run forward passes under."""
    device = torch.device(config.device)
    choice = resolve_precision(config.precision, module, device, "the checkpoint" if saved else None, saved,
                               shape, config.grad_accum_steps)
    if config.precision == "auto" and any_across_ranks(choice.precision == "fp32", device):
        # every rank probes its own CPU; they must agree, and fp32 is the safe side of a split verdict
        choice = PrecisionChoice("fp32", choice.reason if choice.precision == "fp32" else "another rank measured fp32")
    log.info("precision: %s (%s%s)", choice.precision, "auto: " if config.precision == "auto" else "", choice.reason)
    warning = emulated_bf16_warning(device) if choice.precision == "bf16" else None
    if warning:
        log.warning("%s", warning)
    return config.replace(precision=choice.precision), MixedPrecision(module, choice.precision, device)
