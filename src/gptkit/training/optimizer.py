"""AdamW with GPT-1's decoupled weight decay on matrices only (SPEC section 3)."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def build_optimizer(
    module: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    decay_embeddings: bool = True,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `module`'s trainable parameters, in two groups: decay on tensors of rank > 1,
    none on biases and LayerNorm gains (rank 1).

    Embeddings: decayed by default. The paper says "all non bias or gain weights" and the released
    code decays every tensor of rank > 1, embeddings included; that is the behaviour that produced
    the paper's numbers, and the token embedding is also the tied output projection (a true weight
    matrix). `decay_embeddings=False` exempts nn.Embedding tables, as many later GPT codebases do.

    fused: None uses the fused kernel when every parameter is a floating tensor on CPU or CUDA
    (torch >= 2.4 has a fused CPU AdamW; it is measurably faster and mathematically the same).
    """
    embedding_params = set()
    if not decay_embeddings:
        for m in module.modules():
            if isinstance(m, nn.Embedding):
                embedding_params.add(id(m.weight))
    decay, no_decay, seen = [], [], set()
    for p in module.parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        (decay if p.dim() > 1 and id(p) not in embedding_params else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if fused is None:
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in seen_params(groups))
    try:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    except (RuntimeError, TypeError) as e:  # an old torch or an unsupported device: same maths, unfused
        log.debug("fused AdamW unavailable (%s); using the default implementation", e)
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    log.debug(
        "AdamW: %d tensors decayed (%d values), %d not decayed",
        len(decay), sum(p.numel() for p in decay), len(no_decay),
    )
    return opt


def seen_params(groups: list[dict]) -> list[torch.Tensor]:
    return [p for g in groups for p in g["params"]]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group follows the schedule (per-group multipliers are not needed by GPT-1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
