"""THE language-model loss: the tied head and the next-token cross-entropy, computed in chunks of rows.

Scoring N positions against a V-word vocabulary the plain way materialises N x V logits, their
log-softmax and their gradient (at GPT-1's shape, 2048 x 40,478 fp32 = 330 MB each, written and read
several times per step: a memory-bound tenth of an fp32 step and far more of a bf16 one). Here the
rows go through in chunks of about `CHUNK_BYTES` of logits: each chunk's logits are made, scored,
turned into their gradient in place and multiplied back into the gradients of the hidden states and
of the head weight, then dropped. The gradient is computed in the forward pass (the loss is a
weighted sum with weights known up front), so backward only scales it by the incoming gradient and
the logits matmul is never recomputed.

Every reduction is fp32 whatever the input dtype (bf16 logits are widened before the log-softmax);
the head-weight gradient is accumulated over chunks in fp32.
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 64 * 2**20
"""At most about this many bytes of fp32 logits per chunk (64 MiB: 414 rows at a 40,478-word vocabulary)."""
MAX_CHUNK_ROWS = 512
"""And at most this many rows. At a small vocabulary 64 MiB is thousands of rows, and a chunk that large
is slower, not faster: its fp32 logits are a fresh allocation above glibc's mmap threshold, faulted
in and zeroed by the kernel on every step, and they leave the caches between passes. Measured (CPU
time of the loss forward + backward, 4,096 rows, width 256, vocabulary 4,096, 2 threads, quiet):
bf16 82 / 70 / 72 / 133 / 164 ms at 256 / 512 / 1,024 / 2,048 / 4,096 rows per chunk (fp32 171 / 163 /
168 / 196 / 206 ms); at GPT-1's 40,478 words the 414 rows of 64 MiB were within 2% of 1,024."""

IGNORE_INDEX = -100
"""A target equal to this neither counts nor contributes a gradient (as in F.cross_entropy)."""


def chunk_rows_for(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, min(MAX_CHUNK_ROWS, chunk_bytes // (4 * vocab_size)))


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum_i w_i * (logsumexp(h_i W^T) - (h_i W^T)[t_i]) with its gradient made chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, row_weights, chunk_rows, need_grad):  # noqa: ANN001
        n = hidden.size(0)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        for start in range(0, n, chunk_rows):
            h = hidden[start : start + chunk_rows]
            t = targets[start : start + chunk_rows, None]
            w = row_weights[start : start + chunk_rows, None]
            # fp32 log-probabilities of the chunk (the matmul runs in the inputs' dtype)
            logp = torch.log_softmax((h @ weight.t()).float(), dim=-1)  # (n, V)
            loss -= (logp.gather(1, t) * w).sum()
            if need_grad:
                # d/dlogits of w * -log softmax[t] = w * (softmax - onehot(t)), made in logp's storage
                g = logp.exp_().mul_(w).scatter_add_(1, t, -w).to(hidden.dtype)
                grad_h[start : start + chunk_rows] = g @ weight
                if g.dtype == grad_w.dtype:
                    grad_w.addmm_(g.t(), h)  # in place: no (V, C) temporary per chunk
                else:
                    grad_w += g.t() @ h  # bf16 product, accumulated in fp32
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_loss.to(grad_h.dtype), (grad_w * grad_loss).to(ctx.weight_dtype),
                None, None, None, None)


def lm_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    row_weights: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of the tied head `hidden @ weight^T` against `targets`, never holding more than one
    chunk of logits.

    hidden (..., C), targets (...) int64 (IGNORE_INDEX to skip a position), weight (V, C).
    reduction: "mean" over the counted targets, "sum", or "weighted": sum_i row_weights_i * nll_i
    (row_weights has the targets' shape; e.g. fine-tuning's per-sequence average).
    Equal to `F.cross_entropy(hidden @ weight.T, targets)` to float rounding, with the same gradients.
    """
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    counted = targets != IGNORE_INDEX
    if reduction == "weighted":
        if row_weights is None:
            raise ValueError("reduction='weighted' needs row_weights")
        w = row_weights.reshape(-1).float() * counted
    elif reduction == "sum":
        w = counted.float()
    elif reduction == "mean":
        w = counted.float() / counted.sum().clamp_min(1)
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'weighted', got {reduction!r}")
    targets = targets.masked_fill(~counted, 0)
    if weight.dtype != hidden.dtype:  # e.g. fp32 states met a bf16 head: one dtype for both matmuls
        weight = weight.to(hidden.dtype)
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    rows = chunk_rows or chunk_rows_for(weight.size(0))
    return _ChunkedHeadLoss.apply(hidden, weight, targets, w, rows, need_grad)
