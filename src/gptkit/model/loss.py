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
the head-weight gradient is accumulated over chunks in the weight's dtype, by the matmul itself.
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 64 * 2**20
"""At most about this many bytes of fp32 logits per chunk (64 MiB: 414 rows at a 40,478-word vocabulary)."""
MAX_CHUNK_ROWS = 1024
"""And at most this many rows. At a small vocabulary 64 MiB is thousands of rows, and a chunk that large
is slower, not faster: its logits leave the caches between the passes over them. Measured (CPU time of
the loss forward + backward, 4,096 rows, width 256, vocabulary 4,096, bf16, 2 threads, quiet, the chunk
buffers reused as below): 56 / 50-56 / 51-55 ms at 512 / 1,024 / 2,048 rows per chunk (before the
buffers were reused, 2,048 and 4,096 rows cost 133 and 164 ms: each chunk was a fresh allocation
above glibc's mmap threshold, faulted in and zeroed by the kernel). 1,024 rows keep the weight
gradient's per-chunk roundings in bf16 few (below)."""

IGNORE_INDEX = -100
"""A target equal to this neither counts nor contributes a gradient (as in F.cross_entropy)."""


def chunk_rows_for(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, min(MAX_CHUNK_ROWS, chunk_bytes // (4 * vocab_size)))


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum_i w_i * (logsumexp(h_i W^T) - (h_i W^T)[t_i]) with its gradient made chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, row_weights, chunk_rows, need_grad):  # noqa: ANN001
        n, vocab = hidden.size(0), weight.size(0)
        rows = min(chunk_rows, n)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Two chunk-sized buffers for the whole call, written in place by every chunk: the logits in the
        # matmul's dtype and their fp32 copy, which becomes the log-softmax's exponentials and then the
        # gradient (one buffer when the inputs are fp32). Fresh tensors per chunk cost a kernel page-fault
        # pass each (they are above glibc's mmap threshold at GPT-1's vocabulary).
        logits = torch.empty(rows, vocab, dtype=hidden.dtype, device=hidden.device)
        scores = logits if hidden.dtype == torch.float32 else torch.empty(
            rows, vocab, dtype=torch.float32, device=hidden.device)
        if need_grad:
            grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
            # Accumulated in the weight's dtype, inside the matmul (addmm_: fp32 accumulators, one rounding
            # per chunk). For bf16 that is a few roundings where one fp32 sum would give one, but the
            # gradient leaves this function in bf16 either way: measured at GPT-1's shape (5 chunks) its
            # error against fp32 is 1.43e-3 (relative norm) against 1.34e-3 for a single rounding, and it
            # halves the loss's CPU time (an fp32 accumulator needed a (V, C) bf16 product and its fp32
            # conversion per chunk: 1.61 -> 0.79 s per step, forward + backward, 2 threads).
            grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)  # the first chunk writes it
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            h = hidden[start:stop]
            t = targets[start:stop, None]
            w = row_weights[start:stop, None]
            chunk_logits, z = logits[: stop - start], scores[: stop - start]
            torch.mm(h, weight.t(), out=chunk_logits)
            if z is not chunk_logits:
                z.copy_(chunk_logits)  # fp32 from here on
            # log-softmax in place: z - max, exponentiate, sum; nll = log(sum) - (z_t - max)
            z.sub_(z.amax(dim=1, keepdim=True))
            z_target = z.gather(1, t)
            z.exp_()
            total = z.sum(dim=1, keepdim=True)
            loss += ((total.log() - z_target) * w).sum()
            if need_grad:
                # d/dlogits of w * -log softmax[t] = w * (softmax - onehot(t)), made in z's storage
                z.mul_(w / total).scatter_add_(1, t, -w)
                if z is not chunk_logits:
                    chunk_logits.copy_(z)
                torch.mm(chunk_logits, weight, out=grad_h[start:stop])
                if start == 0:
                    torch.mm(chunk_logits.t(), h, out=grad_w)
                else:
                    grad_w.addmm_(chunk_logits.t(), h)  # in place: no (V, C) temporary per chunk
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        # Scaled in place: at GPT-1's vocabulary a fresh (V, C) product costs a page-faulting allocation
        # and a pass (~0.1 s per step on 2 cores), and the saved gradients are not needed again. A second
        # backward through the same graph (retain_graph) is refused by autograd's check of the saved
        # tensors' versions, never answered with an already-scaled gradient. A factor of exactly 1 (the
        # common case, read without a device sync on CPU only) is skipped. grad_loss stays an fp32 0-dim
        # tensor: a bf16 tensor times it is computed in fp32 and rounded once (cast to bf16 first, a
        # factor such as 1/3 from gradient accumulation would be off by 0.4%).
        if grad_loss.device.type != "cpu" or float(grad_loss) != 1.0:
            grad_h.mul_(grad_loss)
            grad_w.mul_(grad_loss)
        return grad_h, grad_w, None, None, None, None


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
