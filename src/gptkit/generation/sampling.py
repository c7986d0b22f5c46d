"""Turning one step's next-token logits into token ids: penalty, temperature, top-k, top-p, draw.

Pure functions on tensors so they can be tested on crafted distributions without a model.
"""

from __future__ import annotations

import math

import torch


def apply_repetition_penalty(logits: torch.Tensor, history: list[list[int]], penalty: float) -> torch.Tensor:
    """Discourage tokens already in each row's history (CTRL's rule, Keskar et al. 2019): a positive
    logit is divided by `penalty`, a negative one multiplied, so the token always becomes less likely
    whatever the sign. logits (B, V); history[b] is row b's prompt + generated ids."""
    if penalty == 1.0:
        return logits
    logits = logits.clone()
    for b, ids in enumerate(history):
        if not ids:
            continue
        index = torch.tensor(sorted(set(ids)), device=logits.device)
        seen = logits[b, index]
        penalised = torch.where(seen > 0, seen / penalty, seen * penalty)
        # A tiny or huge penalty overflows to +-inf, and an inf logit turns the softmax into NaN:
        # the largest finite value keeps the token the most (or least) likely instead.
        limit = torch.finfo(penalised.dtype).max
        logits[b, index] = penalised.clamp(-limit, limit)
    return logits


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept too); the rest -> -inf."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most likely tokens whose
    probability mass reaches p; the most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of logits (B, V) -> (B,). Temperature 0 means greedy (argmax).

    Sampling draws by the "exponential race": argmax(p / E) with E ~ Exp(1) per token picks token i
    with probability p_i, and consumes the generator the same way for the same shapes, so a seeded
    run is reproducible on the cached and uncached paths alike.
    """
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:  # (also false for NaN)
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    logits = logits.float()
    if temperature == 0.0 or top_k == 1:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if not torch.isfinite(scaled.amax(dim=-1)).all():
        # A tiny temperature overflowed fp32 (inf / inf is NaN in the softmax, whose argmax is token
        # 0): divide the distance to the row's top logit instead (softmax does not move with a
        # shift), so the top token keeps its place and temperature -> 0 tends to greedy, as it should.
        # A temperature under fp32's smallest value is 0 to torch: the top tokens' 0 / 0 is then 0.
        scaled = torch.nan_to_num((logits - logits.amax(dim=-1, keepdim=True)) / temperature, nan=0.0)
    logits = scaled
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = logits.softmax(dim=-1)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)
