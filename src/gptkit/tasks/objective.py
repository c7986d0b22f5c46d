"""The fine-tuning objective (SPEC section 4): L = task_loss + lm_coef * LM_loss on the same inputs.

The LM loss follows the released code: next-token cross-entropy over each sequence's real tokens only
(padding neither predicts nor is predicted), averaged per sequence, then over the sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batching import TaskBatch
from .model import TaskModel, TaskOutput


def masked_lm_loss(model: TaskModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (N, T, C) predicting ids (N, T) shifted by one; mask (N, T) True on real tokens.

    Each sequence's mean over its real targets, then the mean over sequences, so a long sequence
    does not outweigh a short one (the released code's per-sequence average). The model's one LM
    loss (chunked, no (N, T, V) logits) runs only on positions whose next token is real."""
    valid = mask[:, 1:]  # (N, T-1): position t predicts token t+1
    per_row = valid.sum(dim=1, keepdim=True).clamp_min(1) * ids.size(0)  # (N, 1)
    row_weights = (1.0 / per_row).expand_as(valid)[valid]  # (M,) for the M real targets
    return model.gpt.lm_loss(hidden[:, :-1][valid], ids[:, 1:][valid], row_weights, reduction="weighted")


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
