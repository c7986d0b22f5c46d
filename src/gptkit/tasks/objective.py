"""The fine-tuning objective (SPEC section 4): L = task_loss + lm_coef * LM_loss on the same inputs.

The LM loss follows the released code: next-token cross-entropy over each sequence's real tokens only
(padding neither predicts nor is predicted), averaged per sequence, then over the sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batching import TaskBatch
from .model import TaskModel, TaskOutput


def sequence_lm_loss(lm_logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """lm_logits (N, T, V) predicting ids (N, T) shifted by one; mask (N, T) True on real tokens.

    Each sequence's mean over its real targets, then the mean over sequences, so a long sequence
    does not outweigh a short one (the released code's per-sequence average)."""
    targets = ids[:, 1:]
    valid = mask[:, 1:].to(lm_logits.dtype if lm_logits.is_floating_point() else torch.float32)
    nll = F.cross_entropy(
        lm_logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none"
    ).view_as(targets)  # (N, T-1)
    per_sequence = (nll * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)
    return per_sequence.mean()


def masked_lm_loss(model: TaskModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same value as `sequence_lm_loss(model.gpt.lm_logits(hidden), ids, mask)`, but the (large)
    vocabulary projection runs only on positions whose next token is real, not on padding."""
    valid = mask[:, 1:]  # (N, T-1): position t predicts token t+1
    logits = model.gpt.lm_logits(hidden[:, :-1][valid])  # (M, V) for the M real targets
    nll = F.cross_entropy(logits.float(), ids[:, 1:][valid], reduction="none")  # (M,)
    rows = torch.arange(ids.size(0), device=ids.device)[:, None].expand_as(valid)[valid]
    per_sequence = torch.zeros(ids.size(0), device=nll.device, dtype=nll.dtype).index_add_(0, rows, nll)
    return (per_sequence / valid.sum(dim=1).clamp_min(1).to(nll.dtype)).mean()


def task_loss(model: TaskModel, out: TaskOutput, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over classes or candidates; mean squared error for regression."""
    if model.spec.regression:
        return F.mse_loss(out.logits.float(), labels.float())
    return F.cross_entropy(out.logits.float(), labels)


class FinetuneObjective:
    """`(model, batch) -> (loss, metrics)` for the training loop. With lm_coef = 0 the LM head is not
    even run, so the loss is exactly the task loss."""

    def __init__(self, lm_coef: float) -> None:
        self.lm_coef = lm_coef  # checked where it is declared (FinetuneConfig.lm_coef)

    def __call__(self, model: TaskModel, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.labels is None:
            raise ValueError("fine-tuning needs labelled batches")
        out = model(batch)  # through the loop's wrapper (DDP under torchrun), which syncs the gradients
        loss_task = task_loss(model, out, batch.labels)
        metrics = {"task_loss": float(loss_task.detach())}
        if self.lm_coef == 0:
            return loss_task, metrics
        loss_lm = masked_lm_loss(model, out.hidden, batch.ids, batch.mask)
        metrics["lm_loss"] = float(loss_lm.detach())
        return loss_task + self.lm_coef * loss_lm, metrics
