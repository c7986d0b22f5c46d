"""GPT (Radford et al., 2018): token + position embeddings -> N blocks -> hidden states -> tied LM head.

The trunk (`Transformer`) returns hidden states; the language-model head is the transpose of the token
embedding (P(u) = softmax(h W_e^T), SPEC section 1); task heads live in `heads.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import Block
from .cache import KVCache
from .config import GPTConfig, preset
from .dropout import Dropout
from .linear import linear
from .loss import lm_head_loss
from .masks import build_attention_mask


@dataclass
class TrunkOutput:
    """Final hidden states (B, T, C) and, only when asked, each layer's attention probabilities."""

    hidden: torch.Tensor
    attentions: list[torch.Tensor] | None = None


class Transformer(nn.Module):
    """The GPT trunk: embeddings, blocks, (final LayerNorm in the GPT-2 order)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.n_ctx, config.n_embd)
        self.emb_dropout = Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        # GPT-1 has no LayerNorm after the last block; the GPT-2 order adds one.
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon) if config.block_order == "pre_ln" else None

    def forward(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> TrunkOutput:
        """idx (B, T) token ids -> hidden states (B, T, C).

        positions: (B, T) position ids; default past, past+1, ... (per-row positions let left-padded
            prompts start at position 0 as they would alone).
        padding_mask: (B, T) bool, True for real tokens. Only needed when padding can be attended to
            (left padding); right padding is invisible to real tokens under the causal mask.
        cache: a KVCache to read history from and append this call's keys/values to.
        """
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if positions is None:
            if past + T > self.config.n_ctx:
                raise ValueError(
                    f"sequence of {past + T} tokens exceeds the model's context window n_ctx={self.config.n_ctx}"
                )
            positions = torch.arange(past, past + T, device=idx.device)[None]
        x = self.emb_dropout(self.tok_emb(idx) + self.pos_emb(positions))  # (B, T, C)

        key_valid = None
        if cache is not None:
            if padding_mask is not None:
                cache.mark_padding(padding_mask)
            key_valid = cache.key_valid if cache.has_padding else None
        elif padding_mask is not None and not bool(padding_mask.all()):
            key_valid = padding_mask
        if key_valid is None and past == 0:
            attn_mask, is_causal = None, True  # fused causal kernel, no mask tensor
        elif key_valid is None and T == 1:
            attn_mask, is_causal = None, False  # one new token sees all of history
        else:
            attn_mask, is_causal = build_attention_mask(T, past, key_valid, idx.device), False

        attentions: list[torch.Tensor] | None = [] if output_attentions else None
        for layer, block in enumerate(self.blocks):
            x, probs = block(
                x, attn_mask=attn_mask, is_causal=is_causal, cache=cache, layer=layer, need_weights=output_attentions
            )
            if attentions is not None:
                attentions.append(probs)
        if cache is not None:
            cache.advance(T)
        if self.ln_f is not None:
            x = self.ln_f(x)
        return TrunkOutput(hidden=x, attentions=attentions)


class GPT(nn.Module):
    """A GPT language model. `model(ids)` returns next-token logits (B, T, V).

    >>> from gptkit import GPT
    >>> model = GPT.from_preset("tiny")
    >>> logits = model(torch.randint(0, 512, (2, 16)))
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.apply(self._init_weights)
        if config.block_order == "pre_ln":
            # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init (SPEC section 1).
            std = config.initializer_range / math.sqrt(2 * config.n_layer)
            for block in self.transformer.blocks:
                nn.init.normal_(block.attn.proj.weight, mean=0.0, std=std)
                nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=std)

    def _init_weights(self, module: nn.Module) -> None:
        """Weights and embeddings N(0, 0.02), biases 0, LayerNorm gain 1 and bias 0 (SPEC section 1)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPT:
        return cls(preset(name, **overrides))

    # --- forward ------------------------------------------------------------------------------

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied LM head: hidden (..., C) @ W_e^T -> logits (..., V)."""
        return linear(hidden, self.transformer.tok_emb.weight)

    def lm_loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        row_weights: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Next-token cross-entropy of the tied head on `hidden` (..., C) against `targets` (...), in
        chunks, without the (..., V) logits (see `model/loss.py`); `lm_logits` + cross-entropy in value."""
        return lm_head_loss(hidden, self.transformer.tok_emb.weight, targets, row_weights, reduction=reduction)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, T, V); with `targets` (B, T) the mean cross-entropy against them
        instead (a scalar), computed without the logits. Through `forward` so that wrappers (DDP,
        torch.compile) see the whole computation."""
        hidden = self.transformer(idx, positions=positions, padding_mask=padding_mask, cache=cache).hidden
        if targets is not None:
            return self.lm_loss(hidden, targets)
        return self.lm_logits(hidden)

    # --- surgery ------------------------------------------------------------------------------

    def resize_token_embeddings(self, new_size: int, *, generator: torch.Generator | None = None) -> None:
        """Grow (or shrink) the token embedding; new rows are fresh N(0, initializer_range) draws, so
        task tokens (start, delimiter, extract) start as the paper's new embeddings do."""
        old = self.transformer.tok_emb
        if new_size == old.num_embeddings:
            return
        new = nn.Embedding(new_size, self.config.n_embd, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            keep = min(new_size, old.num_embeddings)
            new.weight[:keep] = old.weight[:keep]
        self.transformer.tok_emb = new
        self.config = self.config.replace(vocab_size=new_size)
        self.transformer.config = self.config
        self.redraw_token_rows(range(keep, new_size), generator=generator)

    def redraw_token_rows(self, ids: Sequence[int], *, generator: torch.Generator | None = None) -> None:
        """Give the token embedding's rows `ids` fresh N(0, initializer_range) draws, the paper's
        initialisation of a new token (drawn in fp32 whatever the weight's dtype, so a bf16 model gets
        the same values rounded)."""
        ids = list(ids)
        if not ids:
            return
        weight = self.transformer.tok_emb.weight
        with torch.no_grad():
            fresh = torch.randn(len(ids), self.config.n_embd, generator=generator, dtype=torch.float32)
            weight[ids] = (fresh * self.config.initializer_range).to(weight)

    # --- accounting ---------------------------------------------------------------------------

    def num_parameters(self, *, exclude_positions: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_positions:
            n -= self.transformer.pos_emb.weight.numel()
        return n


def parameter_breakdown(model: GPT) -> dict[str, int]:
    """Parameter counts by part (the LM head is tied to the token embedding and adds none)."""
    t = model.transformer
    parts = {
        "token embedding": t.tok_emb.weight.numel(),
        "position embedding": t.pos_emb.weight.numel(),
        "attention": sum(p.numel() for b in t.blocks for p in b.attn.parameters()),
        "mlp": sum(p.numel() for b in t.blocks for p in b.mlp.parameters()),
        "layernorm": sum(p.numel() for b in t.blocks for m in (b.ln_attn, b.ln_mlp) for p in m.parameters()),
    }
    if t.ln_f is not None:
        parts["layernorm"] += sum(p.numel() for p in t.ln_f.parameters())
    parts["total"] = sum(parts.values())
    return parts


def training_flops_per_token(config: GPTConfig, n_params: int | None = None) -> int:
    """6 x (parameters without position embeddings) + 12 x n_layer x n_embd x n_ctx (attention)."""
    if n_params is None:
        n_params = count_parameters(config)
    n_params -= config.n_ctx * config.n_embd
    return 6 * n_params + 12 * config.n_layer * config.n_embd * config.n_ctx


def count_parameters(config: GPTConfig) -> int:
    """Parameter count from the config alone (no allocation)."""
    C, F_, L = config.n_embd, config.inner_dim, config.n_layer
    per_block = (C * 3 * C + 3 * C) + (C * C + C) + (C * F_ + F_) + (F_ * C + C) + 4 * C
    final_ln = 2 * C if config.block_order == "pre_ln" else 0
    return config.vocab_size * C + config.n_ctx * C + L * per_block + final_ln
