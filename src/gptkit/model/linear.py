"""The model's linear maps, and the kernel a decoding step's few rows go through.

A decoding step multiplies a handful of rows (one per sequence in the batch) by every weight matrix:
it reads each weight once for very little arithmetic, so its speed is the rate at which a kernel
streams weights from memory. torch has several kernels for that product and which is fastest depends
on the CPU, the dtype and the number of threads, so it is measured on the host (`few_rows_kernel`),
not assumed. Everything else (training, whole sequences, autocast) goes straight to `F.linear`.
"""

from __future__ import annotations

import functools
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

FEW_DTYPES = (torch.float32, torch.bfloat16)
FEW_ROWS = 16
"""At most this many rows (a decoding step's batch, a short prompt) take the measured kernel."""
PROBE_ROWS = 8
"""The rows the probe measures for products of 2 to FEW_ROWS rows (one row is measured on its own)."""


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, except for at most FEW_ROWS fp32 or bf16 rows on a CPU outside autograd and
    autocast (a decoding step), which go through the kernel measured fastest for them on this CPU."""
    rows = x.numel() // x.size(-1) if x.size(-1) else 0
    if (1 <= rows <= FEW_ROWS and x.device.type == "cpu" and x.dtype in FEW_DTYPES
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and weight.is_contiguous()):
        threads = torch.get_num_threads()
        kernel = few_rows_kernel(x.dtype, threads, 1 if rows == 1 else PROBE_ROWS)
        if kernel != "linear":
            x2 = x.reshape(rows, x.size(-1))
            y = torch.mv(weight, x2[0]).unsqueeze(0) if kernel == "mv" else split_product(x2, weight, threads)
            if bias is not None:
                y = y.add_(bias)
            return y.view(*x.shape[:-1], weight.size(0))
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear through `linear` (same parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def split_product(x: torch.Tensor, weight: torch.Tensor, parts: int) -> torch.Tensor:
    """`x @ weight.T` for a few rows `x` (rows, in), as `parts` products over consecutive blocks of
    the weight's rows in one batched product. torch spreads a batch over its threads; the product of a
    few rows (MKL's fp32 one, on some CPUs) runs on one thread and leaves the other cores' memory
    bandwidth unused. The blocks are views of the weight (no copy); the rows of the weight that do not
    divide evenly go through `F.linear`."""
    rows, in_features = x.shape
    out_features = weight.size(0)
    per_part = out_features // parts
    split = parts * per_part
    pieces = []
    if per_part:
        blocks = weight[:split].view(parts, per_part, in_features).transpose(1, 2)
        y = torch.bmm(x.expand(parts, rows, in_features), blocks)  # (parts, rows, per_part)
        pieces.append(y.transpose(0, 1).reshape(rows, split))  # a view for one row, a small copy else
    if split < out_features:
        pieces.append(F.linear(x, weight[split:]))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


@functools.cache
def few_rows_kernel(dtype: torch.dtype, threads: int, rows: int) -> str:
    """'linear', 'mv' or 'split': the fastest way on this CPU to multiply `rows` rows of `dtype` by a
    weight matrix with `threads` intra-op threads; measured once per process for each combination
    (about 0.1 s, on the first decoding step that needs it).

    The candidates are torch's `F.linear`, `torch.mv` (one row only), and `split_product` (the product
    spread over the threads; with two or more). Measured on 2 threads, quiet, weights of the gpt1
    blocks' shapes that do not fit the caches (docs/performance.md): an Intel Xeon (AMX) streamed bf16
    weights at 20.6 GB/s for one row by `torch.mv` against 13.1 by `F.linear`; an AMD EPYC
    (AVX512-BF16, no AMX) bf16 at 16.5 GB/s by `F.linear` against 11.4 by `torch.mv`, and fp32 at
    22-27 GB/s by `split_product` against 15-16 by `F.linear` or `torch.mv`, whose fp32 kernels use one
    core there (for 2 to 16 rows: 11-24 GB/s split against 7-14). The probe's matrix (64 MiB) is larger
    than a CPU's last-level cache, as the model's weights are together.
    """
    in_features = 1024
    weight = torch.ones(64 * 2**20 // (in_features * dtype.itemsize), in_features, dtype=dtype)
    x = torch.ones(rows, in_features, dtype=dtype)
    kernels = {"linear": lambda: F.linear(x, weight)}
    if rows == 1:
        kernels["mv"] = lambda: torch.mv(weight, x[0])
    if threads > 1:
        kernels["split"] = lambda: split_product(x, weight, threads)
    best = dict.fromkeys(kernels, float("inf"))
    with torch.no_grad():
        for round_ in range(6):  # interleaved, so all see the same neighbours' load; round 0 warms up
            for name, kernel in kernels.items():
                start = time.perf_counter()
                kernel()
                if round_:
                    best[name] = min(best[name], time.perf_counter() - start)
    choice = min(best, key=best.get)
    log.debug("%d-row %s kernel on %d threads: %s (%s)", rows, dtype, threads, choice,
              ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in best.items()))
    return choice
