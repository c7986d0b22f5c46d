"""Attention with dropout on the probabilities, from the q/k/v projection to the concatenated heads, for CPU training.

Composed from plain ops, `dropout(softmax(q k^T / sqrt(hs) + bias)) @ v` leaves autograd holding the
softmax output (for its backward), the dropout mask (for dropout's) and the dropped probabilities
(for the matmul with v): three tensors of the size of the scores per layer. At GPT-1's shape in bf16
(4 x 12 x 512 x 512) that is 75 MB a layer, 900 MB for the 12 layers, the largest part of a step's
activations. Here the probabilities and the mask are kept and the dropped probabilities are
recomputed from them in backward: one more multiply per layer for a third less of that memory.
(Drawing the mask again in backward from a saved seed would keep only the probabilities; measured on
the demo's model in bf16, the second draw made a step 8% slower, so the mask is kept.)

The function also owns the head layout. The projection's (B, T, 3C) output is rearranged into
contiguous (3, B*nh, T, hs) heads in one copy, so that every batched matmul reads plain or simply
transposed operands; the composed ops instead copied q, k and v separately (and k once more for its
transpose) in forward and again in backward. The 1/sqrt(hs) scale and the additive mask ride on the
matmuls (`baddbmm`'s alpha and input) instead of separate passes over q and the scores, and the
gradients of q, k and v are written into one (3, B*nh, T, hs) buffer that is rearranged back once.

Used by the CPU training path with attention dropout (model/blocks.py); other devices use SDPA.
"""

from __future__ import annotations

import torch

from .dropout import dropout_mask


def _heads(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, 3C) -> contiguous (3, B*nh, T, hs)."""
    B, T, C3 = qkv.shape
    hs = C3 // (3 * n_head)
    return qkv.view(B, T, 3, n_head, hs).permute(2, 0, 3, 1, 4).reshape(3, B * n_head, T, hs)


class _AttendWithDropout(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")  # backward under forward's autocast state (FSDP's fallback)
    def forward(ctx, qkv, bias, n_head, scale, p):  # noqa: ANN001
        B, T, C3 = qkv.shape
        device = qkv.device.type
        if torch.is_autocast_enabled(device):  # one compute dtype for every op here, the out= ones included
            qkv = qkv.to(torch.get_autocast_dtype(device))
            bias = bias.to(qkv.dtype) if bias is not None else None
        if bias is not None and bias.dim() == 4:  # (B or 1, 1, T, S) -> the flat heads' (B*nh or 1, T, S)
            bias = bias.expand(B, n_head, T, T).reshape(B * n_head, T, T) if bias.size(0) > 1 else bias.flatten(0, 1)
        heads = _heads(qkv, n_head)
        q, k, v = heads.unbind(0)  # each (B*nh, T, hs), contiguous
        if bias is None:
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
        else:
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)  # (B*nh, T, S)
        probs = scores.softmax(dim=-1)
        del scores
        mask = dropout_mask(probs.shape, p, probs.dtype, probs.device)
        y = torch.bmm(probs * mask, v)  # (B*nh, T, hs)
        ctx.save_for_backward(heads, probs, mask)
        ctx.scale, ctx.n_head = scale, n_head
        return y.view(B, n_head, T, -1).transpose(1, 2).reshape(B, T, C3 // 3)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):  # noqa: ANN001
        heads, probs, mask = ctx.saved_tensors
        q, k, v = heads.unbind(0)
        B, T, C = grad_out.shape
        nh, scale = ctx.n_head, ctx.scale
        grad_y = grad_out.view(B, T, nh, C // nh).transpose(1, 2).reshape(B * nh, T, C // nh)
        grad_heads = torch.empty_like(heads)
        gq, gk, gv = grad_heads.unbind(0)
        torch.bmm((probs * mask).transpose(1, 2), grad_y, out=gv)
        grad_probs = torch.bmm(grad_y, v.transpose(1, 2)).mul_(mask)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        del grad_probs
        torch.baddbmm(gq, grad_scores, k, beta=0, alpha=scale, out=gq)
        torch.baddbmm(gk, grad_scores.transpose(1, 2), q, beta=0, alpha=scale, out=gk)
        grad_qkv = grad_heads.view(3, B, nh, T, C // nh).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * C)
        return grad_qkv, None, None, None, None


def attend_with_dropout(qkv: torch.Tensor, bias: torch.Tensor | None, n_head: int, scale: float,
                        p: float) -> torch.Tensor:
    """Multi-head dropout_p(softmax(q k^T * scale + bias)) @ v with the heads concatenated.

    qkv (B, T, 3C): the q, k, v projections side by side, each split into n_head heads of C / n_head;
    `bias` is additive (0 or -inf) in qkv's dtype: (T, T), or (B or 1, 1, T, T) as the model's masks
    come; or None. Returns (B, T, C)."""
    return _AttendWithDropout.apply(qkv, bias, n_head, scale, p)
