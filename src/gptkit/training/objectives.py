"""Objectives: `(module, batch) -> (loss tensor, metrics)`; the loop calls them and knows nothing else.

`metrics` values are floats, logged as they are (tokens/s is the batch source's business:
`count_tokens`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Objective = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


def lm_objective(module: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy (SPEC section 3): maximise sum_i log P(u_i | u_<i) over each window.

    batch: {"input_ids": (B, T) int64, "targets": (B, T) int64}; targets are the inputs shifted by
    one, so the module's logits at position t are scored against token t + 1.
    """
    ids, targets = batch["input_ids"], batch["targets"]
    loss = module(ids, targets=targets)  # the chunked head loss (model/loss.py): no (B, T, V) logits
    return loss, {}
