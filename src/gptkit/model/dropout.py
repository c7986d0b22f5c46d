"""Dropout with a cheaper mask: 16-bit random numbers, four per 64-bit draw.

`F.dropout` on CPU draws one Bernoulli sample per element (in the profile of a GPT-1 step, 13% of
fp32 and 16% of bf16 step time). Here one int64 random fill of a quarter of the element count is
viewed as int16s, and an element is kept when its int16 is at or above a threshold: drop probability
round(p * 2^16) / 2^16 (p = 0.1 -> 0.1000061), and kept elements are scaled by the exact inverse of
the keep probability, so the expectation is unchanged. The scaled mask is made in the input's dtype
(clamping the int16s to {0, 1} instead of comparing: mixed bool/float ops are slow on CPU) and saved
for backward, as F.dropout does. Measured (1 thread, 8 x 6 x 256 x 256, forward + backward): ~1.8x
faster than F.dropout in fp32 and in bf16 (13.9 vs 24.7 ms; 12.3 vs 23.9 ms). The random numbers
come from the global generator, so seeding and checkpointed RNG states keep runs reproducible; other
devices use F.dropout, which is fused there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """0 where dropped (probability ~p), 1 / (1 - p) elsewhere, in `dtype`."""
    n = shape.numel()
    levels_dropped = round(p * _LEVELS)
    threshold = levels_dropped - _LEVELS // 2  # int16 values below it are dropped
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    keep = bits.view(torch.int16)[:n].clamp_(threshold - 1, threshold).sub_(threshold - 1)  # 0 or 1
    return keep.view(shape).to(dtype).mul_(_LEVELS / (_LEVELS - levels_dropped))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):  # noqa: ANN001
        mask = dropout_mask(x.shape, p, x.dtype, x.device)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability ~p, scale the rest by 1 / (1 - p); identity when not
    training or p == 0."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not x.is_floating_point():
        return F.dropout(x, p, True)
    return _Dropout.apply(x, p)


class Dropout(nn.Dropout):
    """nn.Dropout with the cheaper mask (same arguments, no state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
