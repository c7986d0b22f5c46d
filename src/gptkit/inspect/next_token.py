"""The next-token distribution after a prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gptkit.model.gpt import GPT


@dataclass(frozen=True)
class NextToken:
    """One candidate continuation: its id and probability (the label is filled in by the caller)."""

    id: int
    prob: float
    token: str = ""


@torch.no_grad()
def next_token_distribution(model: GPT, ids: torch.Tensor, k: int = 10) -> list[NextToken]:
    """The k most probable next tokens after `ids` ((T,) or (1, T)), most probable first."""
    if ids.dim() == 1:
        ids = ids[None]
    was_training = model.training
    model.eval()  # no dropout in the distribution shown
    try:
        logits = model(ids)[0, -1]  # (V,)
    finally:
        model.train(was_training)
    probs = logits.float().softmax(dim=-1)
    top = probs.topk(min(k, probs.numel()))
    return [NextToken(int(i), float(p)) for p, i in zip(top.values, top.indices)]
