"""The Transformer block of GPT-1: masked multi-head self-attention and a position-wise MLP.

Shapes: B batch, T new tokens, S keys attended (T, or cached + T), C = n_embd, nh heads, hs = C // nh.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .attention_core import attend_with_dropout
from .cache import KVCache
from .config import GPTConfig
from .dropout import Dropout, dropout
from .masks import causal_mask

log = logging.getLogger(__name__)


ROW_DTYPES = (torch.float32, torch.bfloat16)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, except for one fp32 or bf16 row on a CPU outside autograd and autocast (batch-1
    decoding), which goes through whichever of three kernels reads the weight fastest on this CPU
    (`row_kernel`)."""
    if (x.device.type == "cpu" and x.numel() == x.size(-1) and x.dtype in ROW_DTYPES
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and weight.is_contiguous()):
        kernel = row_kernel(x.dtype, torch.get_num_threads())
        if kernel != "linear":
            row = x.reshape(-1)
            y = torch.mv(weight, row) if kernel == "mv" else split_mv(weight, row, torch.get_num_threads())
            if bias is not None:
                y = y.add_(bias)
            return y.view(*x.shape[:-1], weight.size(0))
    return F.linear(x, weight, bias)


def split_mv(weight: torch.Tensor, row: torch.Tensor, parts: int) -> torch.Tensor:
    """`weight @ row` as `parts` matrix-vector products over consecutive blocks of the weight's rows,
    in one batched product. torch spreads a batch over its threads; a single matrix-vector product
    (MKL's, on some CPUs) runs on one thread and leaves the other cores' memory bandwidth unused. The
    blocks are views of the weight (no copy); rows that do not divide evenly go through `torch.mv`."""
    out_features, in_features = weight.shape
    per_part = out_features // parts
    y = torch.empty(out_features, dtype=row.dtype)
    split = parts * per_part
    if per_part:
        blocks = weight[:split].view(parts, per_part, in_features).transpose(1, 2)
        torch.bmm(row.expand(parts, 1, in_features), blocks, out=y[:split].view(parts, 1, per_part))
    if split < out_features:
        torch.mv(weight[split:], row, out=y[split:])
    return y


@functools.cache
def row_kernel(dtype: torch.dtype, threads: int) -> str:
    """'linear', 'mv' or 'split': the fastest way on this CPU to multiply one row of `dtype` by a
    weight matrix, with `threads` intra-op threads; measured once per process and (dtype, threads)
    pair (about 0.1 s, on the first batch-1 decoding step).

    The candidates are torch's one-row `F.linear`, `torch.mv`, and `split_mv` (the product spread over
    the threads; only with two or more). Which wins depends on the CPU and the dtype, so it is
    measured, not assumed. Measured on 2 threads, quiet, on weights of the gpt1 blocks' shapes that do
    not fit the caches (docs/performance.md): an Intel Xeon (AMX) streamed bf16 weights at 20.6 GB/s
    by `torch.mv` against 13.1 by `F.linear`; an AMD EPYC (AVX512-BF16, no AMX) bf16 at 16.5 GB/s by
    `F.linear` against 11.4 by `torch.mv`, and fp32 at about 22-27 GB/s by `split_mv` against 15-16 by
    `F.linear` or `torch.mv`, whose fp32 kernel uses one core there. The probe's matrix (64 MiB) is
    larger than a CPU's last-level cache, as the model's weights are together.
    """
    in_features = 1024
    weight = torch.ones(64 * 2**20 // (in_features * dtype.itemsize), in_features, dtype=dtype)
    row = torch.ones(in_features, dtype=dtype)
    kernels = {"linear": lambda: F.linear(row[None], weight), "mv": lambda: torch.mv(weight, row)}
    if threads > 1:
        kernels["split"] = lambda: split_mv(weight, row, threads)
    best = dict.fromkeys(kernels, float("inf"))
    with torch.no_grad():
        for round_ in range(4):  # interleaved, so all see the same neighbours' load; round 0 warms up
            for name, kernel in kernels.items():
                start = time.perf_counter()
                kernel()
                if round_:
                    best[name] = min(best[name], time.perf_counter() - start)
    choice = min(best, key=best.get)
    log.debug("one-row %s kernel on %d threads: %s (%s)", dtype, threads, choice,
              ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in best.items()))
    return choice


class Linear(nn.Linear):
    """nn.Linear through `linear` (same parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU in the tanh form the paper and its code use: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
    return F.gelu(x, approximate="tanh")


class CausalSelfAttention(nn.Module):
    """q, k, v from one projection (C -> 3C), scaled dot-product per head, heads concatenated, C -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.qkv = Linear(config.n_embd, 3 * config.n_embd)
        self.proj = Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) -> q, k, v each (B, nh, T, hs)."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = True,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the sublayer output (B, T, C) and, only if asked, the probabilities (B, nh, T, S).

        `attn_mask` is a boolean (B or 1, 1, T, S) with True where a query may see a key; when it is
        None and `is_causal`, the plain causal mask is used (SDPA's fused kernels apply it without
        materialising a mask tensor).
        """
        B, T, C = x.shape
        dropout_p = self.attn_pdrop if self.training else 0.0
        if dropout_p > 0.0 and x.device.type == "cpu" and cache is None and not need_weights:
            # Training with attention dropout on CPU: SDPA has no fused kernel for it and falls back to
            # a generic path (separate scaling of q and k, mask checks); this one makes fewer passes
            # over the (B, nh, T, S) scores (1.1x faster per layer in fp32, 2x in bf16, measured), keeps
            # two of them for backward instead of three and copies the heads once (model/attention_core.py).
            y = self._attend_with_dropout(self.qkv(x), attn_mask, is_causal, dropout_p)
            return self.resid_dropout(self.proj(y)), None
        q, k, v = self.split_heads(x)
        if cache is not None:
            k, v = cache.write(layer, k, v)  # (B, nh, S, hs) including history
        probs = None
        if need_weights:
            # Same q, k, v and mask, with the probabilities kept: used by the inspection tools only.
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, nh, T, S)
            if attn_mask is None and is_causal:
                attn_mask = causal_mask(T, k.size(2), x.device)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            y = dropout(probs, dropout_p, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=attn_mask is None and is_causal
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # concatenate heads
        return self.resid_dropout(self.proj(y)), probs


    def _attend_with_dropout(
        self, qkv: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool, dropout_p: float,
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(hs) + mask) with dropout on the probabilities, @ v, heads concatenated:
        (B, T, 3C) -> (B, T, C)."""
        T = qkv.size(1)
        causal = attn_mask is None and is_causal  # a given mask may let a query see later keys
        if causal:
            attn_mask = causal_mask(T, T, qkv.device)
        bias = None
        if attn_mask is not None:
            # an additive mask (0 or -inf) in the scores' dtype, added by the scores' matmul itself
            bias = torch.zeros(attn_mask.shape, dtype=qkv.dtype, device=qkv.device).masked_fill_(~attn_mask, float("-inf"))
        return attend_with_dropout(qkv, bias, self.n_head, 1.0 / math.sqrt(self.head_dim), dropout_p, causal=causal)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> inner (GELU or ReLU) -> C, dropout on the output."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = Linear(config.n_embd, config.inner_dim)
        self.proj = Linear(config.inner_dim, config.n_embd)
        self.act = gelu_tanh if config.activation == "gelu" else F.relu
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Post-LN (GPT-1): n = LN(x + Attn(x)); h = LN(n + MLP(n)).
    Pre-LN (GPT-2):  n = x + Attn(LN(x)); h = n + MLP(LN(n))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.pre_ln = config.block_order == "pre_ln"
        self.attn = CausalSelfAttention(config)
        self.ln_attn = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.ln_mlp = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, **attn_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_ln:
            a, probs = self.attn(self.ln_attn(x), **attn_kwargs)
            x = x + a
            return x + self.mlp(self.ln_mlp(x)), probs
        a, probs = self.attn(x, **attn_kwargs)
        n = self.ln_attn(x + a)
        return self.ln_mlp(n + self.mlp(n)), probs
