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
    q, k, v = (torch.randn(B, nh, T, hs, generator=g).to(dtype).requires_grad_() for _ in range(3))
    bias = torch.zeros(T, T, dtype=dtype).masked_fill_(~causal_mask(T, T, "cpu"), float("-inf"))
    return q, k, v, bias


def _composed(q, k, v, bias, scale, p):  # noqa: ANN001, ANN202
    """The plain-ops formula, drawing its mask as the function does."""
    probs = ((q * scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
    return (probs * dropout_mask(probs.shape, p, probs.dtype)) @ v


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_values_and_gradients_equal_the_composed_ops(dtype: torch.dtype, tol: float) -> None:
    q, k, v, bias = _inputs(dtype)
    scale, p = 1 / math.sqrt(q.size(-1)), 0.3
    torch.manual_seed(7)
    y = attend_with_dropout(q, k, v, bias, scale, p)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (q, k, v), grad)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    torch.manual_seed(7)
    y_ref = _composed(q2, k2, v2, bias, scale, p)
    want = torch.autograd.grad(y_ref, (q2, k2, v2), grad)
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    assert (y != ((q * scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v).any()  # dropout did drop


def test_the_global_seed_decides_the_mask() -> None:
    q, k, v, bias = _inputs(torch.float32)
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outs.append(attend_with_dropout(q, k, v, bias, 0.5, 0.2))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_a_training_block_keeps_two_scores_sized_tensors_per_layer() -> None:
    """The memory the function is for: count the saved tensors as large as the attention scores."""
    config = GPTConfig(vocab_size=50, n_ctx=32, n_embd=16, n_layer=2, n_head=2, attn_pdrop=0.1)
    model = GPT(config).train()
    ids = torch.randint(0, 50, (3, 32))
    scores_shape = (3, 2, 32, 32)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape) == scores_shape:
            saved.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, targets=ids)
    assert len(set(saved)) == 2 * config.n_layer  # the composed ops keep 3 per layer
