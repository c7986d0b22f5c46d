"""THE LM loss (model/loss.py): chunked head + cross-entropy equals the plain one, never holds the
full logits, and is what pre-training, evaluation and fine-tuning's auxiliary loss use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gptkit.model import GPT, preset
from gptkit.model.loss import IGNORE_INDEX, lm_head_loss


def _inputs(n: int = 37, c: int = 24, v: int = 301, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, c, generator=g, dtype=torch.float64).float().requires_grad_()
    weight = (0.3 * torch.randn(v, c, generator=g)).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, targets


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk_rows", [1, 5, 16, 37, 1000])
def test_chunked_equals_unchunked_fp32(chunk_rows):
    hidden, weight, targets = _inputs()
    want = F.cross_entropy(hidden @ weight.t(), targets)
    got = lm_head_loss(hidden, weight, targets, chunk_rows=chunk_rows)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, w in zip(_grads(got * 3.0, hidden, weight), _grads(want * 3.0, hidden, weight), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_sum_ignore_and_weighted_reductions():
    hidden, weight, targets = _inputs()
    targets = targets.clone()
    targets[::4] = IGNORE_INDEX
    for reduction in ("sum", "mean"):
        want = F.cross_entropy(hidden @ weight.t(), targets, reduction=reduction, ignore_index=IGNORE_INDEX)
        got = lm_head_loss(hidden, weight, targets, reduction=reduction, chunk_rows=8)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
        for g, w in zip(_grads(got, hidden, weight), _grads(want, hidden, weight), strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    row_w = torch.rand(targets.shape, generator=torch.Generator().manual_seed(1))
    want = (F.cross_entropy(hidden @ weight.t(), targets, reduction="none", ignore_index=IGNORE_INDEX) * row_w).sum()
    got = lm_head_loss(hidden, weight, targets, row_w, reduction="weighted", chunk_rows=6)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    for g, w in zip(_grads(got, hidden, weight), _grads(want, hidden, weight), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_reduce_in_fp32():
    hidden, weight, targets = _inputs(n=64, c=32, v=500)
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    got = lm_head_loss(h16, w16, targets, chunk_rows=10)
    assert got.dtype == torch.float32
    want = F.cross_entropy((h16 @ w16.t()).float(), targets)  # the same bf16 logits, fp32 softmax
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    gh, gw = _grads(got, h16, w16)
    assert gh.dtype == gw.dtype == torch.bfloat16
    rh, rw = _grads(F.cross_entropy(hidden @ weight.t(), targets), hidden, weight)
    torch.testing.assert_close(gh.float(), rh, rtol=0.05, atol=2e-3)
    torch.testing.assert_close(gw.float(), rw, rtol=0.05, atol=2e-3)


class _LogitRows(TorchDispatchMode):
    """Records the most rows of vocabulary-wide (..., V) tensors any op produces while active."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.most = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if not func.is_view and isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab:
                self.most = max(self.most, t.numel() // self.vocab)
        return out


def test_the_model_loss_never_materialises_all_logits():
    model = GPT(preset("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
    V = model.config.vocab_size
    ids = torch.randint(0, V, (4, 33), generator=torch.Generator().manual_seed(0))
    x, y = ids[:, :-1], ids[:, 1:]
    want = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    hidden = model.transformer(x).hidden
    with _LogitRows(V) as seen:
        got = lm_head_loss(hidden, model.transformer.tok_emb.weight, y, chunk_rows=16)
        got.backward()
    assert 0 < seen.most <= 16 < x.numel()  # one chunk of logits at a time, never B x T x V
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for p, w in zip(model.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-5)
    # forward(targets=...) is the same loss (the path pre-training's objective takes)
    with torch.no_grad():
        torch.testing.assert_close(model(x, targets=y), want.detach(), rtol=1e-6, atol=1e-6)


def test_default_chunks_are_at_most_64_mib_and_1024_rows():
    """A small vocabulary is cut by rows (larger chunks leave the caches between passes), a large one by
    bytes."""
    from gptkit.model.loss import chunk_rows_for

    assert chunk_rows_for(4096) == 1024
    assert chunk_rows_for(40478) == 414
    assert chunk_rows_for(50257) == 333
    V = 300
    hidden = torch.randn(1100, 8, requires_grad=True)
    weight = torch.randn(V, 8, requires_grad=True)
    with _LogitRows(V) as seen:
        lm_head_loss(hidden, weight, torch.randint(0, V, (1100,))).backward()
    assert seen.most == 1024


class _NewTensorsOfShape(TorchDispatchMode):
    """Counts the tensors of one shape that ops create (not those they write in place)."""

    def __init__(self, shape: torch.Size):
        super().__init__()
        self.shape, self.made = shape, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        mutates = func._schema.is_mutable or func.is_view
        for t in out if isinstance(out, tuple | list) else (out,):
            if not mutates and isinstance(t, torch.Tensor) and t.shape == self.shape:
                self.made += 1
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_head_gradient_is_accumulated_in_place(dtype):
    """Each chunk adds its product into one head-gradient buffer inside the matmul: no (V, C) product
    per chunk, nor (in bf16) its fp32 copy, which made an fp32 accumulator cost half the loss's time."""
    hidden, weight, targets = _inputs(n=64, c=32, v=500)
    h, w = hidden.detach().to(dtype).requires_grad_(), weight.detach().to(dtype).requires_grad_()
    with _NewTensorsOfShape(w.shape) as seen:
        (lm_head_loss(h, w, targets, chunk_rows=8) / 3).backward()  # 8 chunks, a factor in backward
    assert seen.made == 1  # the accumulator, scaled in place by backward
    assert w.grad.dtype == dtype


def test_a_second_backward_is_refused_or_exact():
    """Backward scales the saved gradients in place: a second backward through the same graph must not
    answer with them (autograd's version check refuses it); with a factor of exactly 1 nothing is
    scaled and the second answer equals the first."""
    hidden, weight, targets = _inputs(n=16, c=8, v=30)
    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = lm_head_loss(h, w, targets) / 3
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    loss = lm_head_loss(h, w, targets)
    first = torch.autograd.grad(loss, (h, w), retain_graph=True)
    second = torch.autograd.grad(loss, (h, w))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_bf16_gradient_is_scaled_in_fp32():
    """The incoming gradient (e.g. 1/3 under gradient accumulation) is not rounded to bf16 first."""
    hidden, weight, targets = _inputs(n=64, c=32, v=500)
    h, w = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    gh1, gw1 = _grads(lm_head_loss(h, w, targets), h, w)
    gh3, gw3 = _grads(lm_head_loss(h, w, targets) / 3, h, w)
    torch.testing.assert_close(gh3, (gh1.float() / 3).bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(gw3, (gw1.float() / 3).bfloat16(), rtol=0, atol=0)
