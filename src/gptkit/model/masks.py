"""The attention masks: THE causal mask, and the causal-and-padding mask built on it."""

from __future__ import annotations

import torch


def causal_mask(T: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (T, S): the T newest of S positions (S - T of history before them) each see themselves
    and everything earlier. Query i sits at absolute position S - T + i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


def build_attention_mask(
    T: int,
    past: int,
    key_valid: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Boolean (B or 1, 1, T, past + T) mask: query i (absolute position past + i) sees key j when
    j <= past + i and key j is a real token. A query always sees itself, so a padding query's row is
    never empty (an all-masked row would make softmax produce NaN)."""
    S = past + T
    causal = causal_mask(T, S, device)  # (T, S)
    if key_valid is None:
        return causal[None, None]
    mask = causal[None] & key_valid[:, None, :S]  # (B, T, S)
    diag = torch.zeros(T, S, dtype=torch.bool, device=device)
    diag[torch.arange(T), past + torch.arange(T)] = True
    return (mask | diag[None])[:, None]  # (B, 1, T, S)
