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

Under the plain causal mask the queries are taken in blocks (`query_blocks`), each against only the
keys up to its own end: the part of the square right of the diagonal, which the mask would zero, is
neither computed nor kept. Measured at GPT-1's shape (4 x 12 heads x 512, one layer forward + backward,
2 threads, CPU time): fp32 337 -> 158 ms, bf16 134 -> 98 ms (blocks of 128 rows; 64 and 256 were
slower); a whole training step -9% in fp32 and -5% in bf16, peak memory -300 MB; the demo's 128-token
model (2 blocks of 64) is unchanged within noise.

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


def query_blocks(T: int, block: int | None = None) -> list[tuple[int, int]]:
    """The [start, stop) query ranges that causal attention is computed in: each range sees only the
    keys before its stop, so the masked part right of the diagonal is skipped, not computed and zeroed.
    With n blocks the scores-sized work (the two score matmuls, softmax, dropout, and all of it again in
    backward) is (n + 1) / 2n of the full square. Default: blocks of max(64, T / 4) rows (T = 512: 4
    blocks, 62.5% of the square; T = 128: 2 blocks, 75%); smaller blocks make the matmuls too small to
    pay (at T = 512, blocks of 64 rows were slower than 128)."""
    if block is None:
        block = max(64, T // 4)
    return [(a, min(T, a + block)) for a in range(0, T, block)]


class _AttendWithDropout(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")  # backward under forward's autocast state (FSDP's fallback)
    def forward(ctx, qkv, bias, n_head, scale, p, causal, block):  # noqa: ANN001
        B, T, C3 = qkv.shape
        device = qkv.device.type
        if torch.is_autocast_enabled(device):  # one compute dtype for every op here, the out= ones included
            qkv = qkv.to(torch.get_autocast_dtype(device))
            bias = bias.to(qkv.dtype) if bias is not None else None
        if bias is not None and bias.dim() == 4:  # (B or 1, 1, T, S) -> the flat heads' (B*nh or 1, T, S)
            bias = bias.expand(B, n_head, T, T).reshape(B * n_head, T, T) if bias.size(0) > 1 else bias.flatten(0, 1)
        heads = _heads(qkv, n_head)
        q, k, v = heads.unbind(0)  # each (B*nh, T, hs), contiguous
        # Without a causal bias every query may see every key: one block of all rows.
        blocks = query_blocks(T, block) if causal and bias is not None else [(0, T)]
        y = torch.empty_like(q)
        saved = []
        for a, b in blocks:  # queries [a, b) see keys [0, b): the keys after a block are all masked
            kt = k[:, :b].transpose(1, 2)
            if bias is None:
                scores = torch.bmm(q[:, a:b], kt).mul_(scale)
            else:
                scores = torch.baddbmm(bias[..., a:b, :b], q[:, a:b], kt, alpha=scale)  # (B*nh, rows, b)
            probs = scores.softmax(dim=-1)
            del scores
            if p > 0:
                mask = dropout_mask(probs.shape, p, probs.dtype, probs.device)
                y[:, a:b].baddbmm_(probs * mask, v[:, :b], beta=0)  # (B*nh, rows, hs)
                saved += [probs, mask]
            else:
                y[:, a:b].baddbmm_(probs, v[:, :b], beta=0)
                saved.append(probs)
        ctx.save_for_backward(heads, *saved)
        ctx.scale, ctx.n_head, ctx.blocks, ctx.per_block = scale, n_head, blocks, 2 if p > 0 else 1
        return y.view(B, n_head, T, -1).transpose(1, 2).reshape(B, T, C3 // 3)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):  # noqa: ANN001
        heads, *saved = ctx.saved_tensors
        q, k, v = heads.unbind(0)
        B, T, C = grad_out.shape
        nh, scale, blocks = ctx.n_head, ctx.scale, ctx.blocks
        grad_y = grad_out.view(B, T, nh, C // nh).transpose(1, 2).reshape(B * nh, T, C // nh)
        grad_heads = torch.empty_like(heads)
        gq, gk, gv = grad_heads.unbind(0)
        # The last block sees every key, so it writes all of gk and gv (beta=0); earlier blocks add to
        # their prefix of keys.
        for i in reversed(range(len(blocks))):
            a, b = blocks[i]
            probs, *mask = saved[ctx.per_block * i : ctx.per_block * (i + 1)]
            beta = 0 if i == len(blocks) - 1 else 1
            gy = grad_y[:, a:b]
            gv[:, :b].baddbmm_((probs * mask[0] if mask else probs).transpose(1, 2), gy, beta=beta)
            grad_probs = torch.bmm(gy, v[:, :b].transpose(1, 2))
            if mask:
                grad_probs.mul_(mask[0])
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del grad_probs
            gq[:, a:b].baddbmm_(grad_scores, k[:, :b], beta=0, alpha=scale)
            gk[:, :b].baddbmm_(grad_scores.transpose(1, 2), q[:, a:b], beta=beta, alpha=scale)
        grad_qkv = grad_heads.view(3, B, nh, T, C // nh).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * C)
        return grad_qkv, None, None, None, None, None, None


def attend_with_dropout(qkv: torch.Tensor, bias: torch.Tensor | None, n_head: int, scale: float,
                        p: float, *, causal: bool = False, block: int | None = None) -> torch.Tensor:
    """Multi-head dropout_p(softmax(q k^T * scale + bias)) @ v with the heads concatenated.

    qkv (B, T, 3C): the q, k, v projections side by side, each split into n_head heads of C / n_head;
    `bias` is additive (0 or -inf) in qkv's dtype: (T, T), or (B or 1, 1, T, T) as the model's masks
    come; or None. `causal`: the bias masks every key after its query (the causal mask, alone or with
    more masked), so the queries are taken in blocks of `block` rows (`query_blocks`) that skip the
    keys after them; the result equals the unblocked one to float rounding, but the dropout masks
    are drawn per block. Returns (B, T, C)."""
    return _AttendWithDropout.apply(qkv, bias, n_head, scale, p, causal, block)
