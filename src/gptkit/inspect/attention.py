"""Attention probabilities from the model's own forward pass, and the masks that shape them."""

from __future__ import annotations

import torch

from gptkit.model.gpt import GPT, build_attention_mask


@torch.no_grad()
def attention_maps(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """Every layer's attention probabilities for one sequence: (n_layer, n_head, T, T).

    They come from `CausalSelfAttention.forward` itself (`output_attentions=True` keeps the softmax
    it computes from the same q, k, v and mask), so nothing is re-implemented here. `ids` is (T,) or
    (1, T). The model runs in eval mode (attention dropout would perturb what is shown) and is put
    back in its previous mode afterwards.
    """
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.size(0) != 1:
        raise ValueError(f"attention_maps expects one sequence (T,) or (1, T), got shape {tuple(ids.shape)}")
    was_training = model.training
    model.eval()
    try:
        out = model.transformer(ids, output_attentions=True)
    finally:
        model.train(was_training)
    assert out.attentions is not None
    return torch.stack([a[0] for a in out.attentions])  # (L, nh, T, T)


def causal_mask(n: int) -> torch.Tensor:
    """(n, n) bool, True where query i may see key j (j <= i): the model's own mask builder."""
    return build_attention_mask(n, 0, None, torch.device("cpu"))[0, 0]


def padded_mask(n: int, pad: int) -> torch.Tensor:
    """(n, n) bool mask for a batch row whose first `pad` positions are left padding.

    This is the mask the model builds when `padding_mask` marks those positions: real queries see
    only real, earlier keys; a padding query sees just itself, so its softmax row is never empty.
    """
    if not 0 <= pad < n:
        raise ValueError(f"pad must be in [0, n), got pad={pad} for n={n}")
    key_valid = torch.ones(1, n, dtype=torch.bool)
    key_valid[0, :pad] = False
    return build_attention_mask(n, 0, key_valid, torch.device("cpu"))[0, 0]
