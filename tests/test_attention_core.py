"""The attention-with-dropout function: the composed ops' values and gradients, two saved scores-sized tensors."""

from __future__ import annotations

import math

import pytest
import torch

from gptkit.model import GPT, GPTConfig
from gptkit.model.attention_core import attend_with_dropout
from gptkit.model.dropout import dropout_mask
from gptkit.model.masks import causal_mask


def _inputs(dtype: torch.dtype, B: int = 2, nh: int = 3, T: int = 16, hs: int = 8):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T, 3 * nh * hs, generator=g).to(dtype).requires_grad_()
    bias = torch.zeros(T, T, dtype=dtype).masked_fill_(~causal_mask(T, T, "cpu"), float("-inf"))
    return qkv, bias, nh


def _composed(qkv, bias, nh, scale, p):  # noqa: ANN001, ANN202
    """The plain-ops formula on (B, nh, T, hs) heads, drawing its mask as the function does."""
    B, T, C3 = qkv.shape
    q, k, v = qkv.view(B, T, 3, nh, C3 // (3 * nh)).permute(2, 0, 3, 1, 4).unbind(0)
    probs = ((q * scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
    y = (probs * dropout_mask(probs.shape, p, probs.dtype)) @ v
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("masked", [True, False])
def test_values_and_gradients_equal_the_composed_ops(dtype: torch.dtype, tol: float, masked: bool) -> None:
    qkv, bias, nh = _inputs(dtype)
    bias = bias if masked else None
    scale, p = 1 / math.sqrt(qkv.size(-1) // (3 * nh)), 0.3
    torch.manual_seed(7)
    y = attend_with_dropout(qkv, bias, nh, scale, p)
    grad = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, (qkv,), grad)
    qkv2 = qkv.detach().clone().requires_grad_()
    torch.manual_seed(7)
    y_ref = _composed(qkv2, 0.0 if bias is None else bias, nh, scale, p)
    (want,) = torch.autograd.grad(y_ref, (qkv2,), grad)
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    B, T, C3 = qkv.shape
    q, k, v = qkv.detach().view(B, T, 3, nh, C3 // (3 * nh)).permute(2, 0, 3, 1, 4).unbind(0)
    undropped = (((q * scale) @ k.transpose(-2, -1) + (0.0 if bias is None else bias)).softmax(-1) @ v)
    assert not torch.equal(y, undropped.transpose(1, 2).reshape(B, T, C3 // 3))  # dropout did drop


def test_a_per_row_mask_equals_the_composed_ops() -> None:
    """Fine-tuning's padding masks are (B, 1, T, T): expanded over the heads, not broadcast wrongly."""
    from gptkit.model.blocks import CausalSelfAttention

    config = GPTConfig(vocab_size=50, n_ctx=16, n_embd=24, n_layer=1, n_head=3, attn_pdrop=0.2, resid_pdrop=0.0)
    attn = CausalSelfAttention(config).train()
    x = torch.randn(2, 16, 24)
    mask = causal_mask(16, 16, "cpu").expand(2, 1, 16, 16).clone()
    mask[1, :, :, :5] = False  # row 1: its first five keys are padding
    mask[1, :, :5, :5] = torch.eye(5, dtype=torch.bool)  # padded queries still see themselves
    torch.manual_seed(3)
    y, _ = attn(x, attn_mask=mask)
    bias = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
    torch.manual_seed(3)
    want = attn.proj(_composed(attn.qkv(x), bias, 3, 1 / math.sqrt(8), 0.2))
    torch.testing.assert_close(y, want, atol=1e-6, rtol=1e-6)


def test_the_global_seed_decides_the_mask() -> None:
    qkv, bias, nh = _inputs(torch.float32)
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outs.append(attend_with_dropout(qkv, bias, nh, 0.5, 0.2))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_the_heads_are_copied_once_each_way() -> None:
    """The composed ops copied q, k and v (and k again, transposed) in forward and backward; here one
    rearrangement of the projection goes in and one of its gradient comes out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.clone.default, torch.ops.aten.copy_.default):  # reshape / contiguous copies
                self.count += 1
            return func(*args, **(kwargs or {}))

    qkv, bias, nh = _inputs(torch.float32)
    with Copies() as seen:
        y = attend_with_dropout(qkv, bias, nh, 0.5, 0.2)
        y.backward(torch.ones_like(y))
    assert seen.count <= 4, seen.count  # heads in, y out; grad_y in, grad_qkv out


def test_a_training_block_keeps_two_scores_sized_tensors_per_layer() -> None:
    """The memory the function is for: count the saved tensors as large as the attention scores."""
    config = GPTConfig(vocab_size=50, n_ctx=32, n_embd=16, n_layer=2, n_head=2, attn_pdrop=0.1)
    model = GPT(config).train()
    ids = torch.randint(0, 50, (3, 32))
    scores_shape = (3 * 2, 32, 32)  # (B * nh, T, S)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape) == scores_shape:
            saved.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, targets=ids)
    assert len(set(saved)) == 2 * config.n_layer  # the composed ops keep 3 per layer


def _composed_blocked(qkv, bias, nh, scale, p, blocks):  # noqa: ANN001, ANN202
    """The plain-ops formula, with the dropout mask drawn block by block as the blocked function draws it
    (a block's rows, its keys up to the block's end; zeros right of that are masked anyway)."""
    B, T, C3 = qkv.shape
    q, k, v = qkv.view(B, T, 3, nh, C3 // (3 * nh)).permute(2, 0, 3, 1, 4).unbind(0)
    probs = ((q * scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
    mask = torch.zeros(B * nh, T, T, dtype=probs.dtype)
    for a, b in blocks:
        mask[:, a:b, :b] = dropout_mask(torch.Size((B * nh, b - a, b)), p, probs.dtype)
    y = (probs * mask.view(B, nh, T, T)) @ v
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("block", [4, 5, 16])  # 4 blocks; blocks of 5, 5, 5 and 1 rows; one block
def test_causal_blocks_equal_the_composed_ops(dtype: torch.dtype, tol: float, block: int) -> None:
    qkv, bias, nh = _inputs(dtype)
    scale, p = 0.35, 0.3
    torch.manual_seed(5)
    y = attend_with_dropout(qkv, bias, nh, scale, p, causal=True, block=block)
    grad = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, (qkv,), grad)
    qkv2 = qkv.detach().clone().requires_grad_()
    torch.manual_seed(5)
    y_ref = _composed_blocked(qkv2, bias, nh, scale, p, [(a, min(16, a + block)) for a in range(0, 16, block)])
    (want,) = torch.autograd.grad(y_ref, (qkv2,), grad)
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_causal_blocks_skip_the_keys_after_each_block() -> None:
    """The point of the blocks: the probabilities made cover the causal triangle's blocks, not the square
    (T = 16 in blocks of 4: 4 x (4 + 8 + 12 + 16) = 160 of 256 entries per head), and without dropout the
    result is the unblocked one."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class SoftmaxSizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.entries = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._softmax.default:
                self.entries += out.numel()
            return out

    qkv, bias, nh = _inputs(torch.float32)  # B = 2, nh = 3, T = 16
    with SoftmaxSizes() as seen:
        blocked = attend_with_dropout(qkv, bias, nh, 0.35, 0.0, causal=True, block=4)
    assert seen.entries == 2 * 3 * 160
    whole = attend_with_dropout(qkv, bias, nh, 0.35, 0.0)
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=1e-6)
    # the model's training path declares its plain causal mask, and a long enough context is blocked
    from gptkit.model.blocks import CausalSelfAttention

    config = GPTConfig(vocab_size=50, n_ctx=256, n_embd=16, n_layer=1, n_head=2, attn_pdrop=0.1)
    attn = CausalSelfAttention(config).train()
    with SoftmaxSizes() as seen:
        attn(torch.randn(1, 256, 16))
    assert seen.entries == 2 * 64 * (64 + 128 + 192 + 256)  # blocks of 64 rows
