"""Attention with dropout on the probabilities, keeping two (B, nh, T, S) tensors for backward instead of three.

Composed from plain ops, `dropout(softmax(q k^T / sqrt(hs) + bias)) @ v` leaves autograd holding the
softmax output (for its backward), the dropout mask (for dropout's) and the dropped probabilities
(for the matmul with v): three tensors of the size of the scores per layer. At GPT-1's shape in bf16
(4 x 12 x 512 x 512) that is 75 MB a layer, 900 MB for the 12 layers, the largest part of a step's
activations. Here the probabilities and the mask are kept and the dropped probabilities are
recomputed from them in backward: one more multiply per layer for a third less of that memory.
(Drawing the mask again in backward from a saved seed would keep only the probabilities; measured on
the demo's model in bf16, the second draw made a step 8% slower, so the mask is kept.)

Used by the CPU training path with attention dropout (model/blocks.py); other devices use SDPA.
"""

from __future__ import annotations

import torch

from .dropout import dropout_mask


class _AttendWithDropout(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")  # backward under forward's autocast state (FSDP's fallback)
    def forward(ctx, q, k, v, bias, scale, p):  # noqa: ANN001
        scores = (q * scale) @ k.transpose(-2, -1)  # (B, nh, T, S)
        if bias is not None:
            scores.add_(bias)
        probs = scores.softmax(dim=-1)
        del scores
        mask = dropout_mask(probs.shape, p, probs.dtype, probs.device)
        y = (probs * mask) @ v
        ctx.save_for_backward(q, k, v, probs, mask)
        ctx.scale = scale
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_y):  # noqa: ANN001
        q, k, v, probs, mask = ctx.saved_tensors
        grad_v = (probs * mask).transpose(-2, -1) @ grad_y
        grad_probs = (grad_y @ v.transpose(-2, -1)).mul_(mask)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        del grad_probs
        grad_q = (grad_scores @ k).mul_(ctx.scale)
        grad_k = grad_scores.transpose(-2, -1) @ (q * ctx.scale)
        return grad_q, grad_k, grad_v, None, None, None


def attend_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                        scale: float, p: float) -> torch.Tensor:
    """dropout_p(softmax(q k^T * scale + bias)) @ v -> (B, nh, T, hs); `bias` is additive (0 or -inf),
    broadcastable to the scores (B, nh, T, S), or None."""
    return _AttendWithDropout.apply(q, k, v, bias, scale, p)
