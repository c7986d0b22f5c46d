"""Running a task model over encoded examples: predictions, probabilities, the task's metrics."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import GptkitError
from .batching import iterate_batches
from .model import TaskModel
from .progress import progress_bar
from .transforms import EncodedExample


@torch.no_grad()
def infer(model: TaskModel, encoded: list[EncodedExample], pad_id: int, *, batch_size: int = 64,
          device: str | torch.device = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Run the model over examples -> (predictions, probabilities or values, mean task loss if labelled),
    in the examples' order. They are batched shortest first, so that a batch pads little; each example's
    outputs do not depend on its batch (right padding is invisible under the causal mask)."""
    by_length = np.argsort([x.width for x in encoded], kind="stable")
    was_training = model.training
    model.eval()
    preds, probs, losses, weights = [], [], [], []
    spec = model.spec
    bar = progress_bar(len(encoded), "scoring", progress)
    for batch in iterate_batches([encoded[i] for i in by_length], batch_size, pad_id, spec):
        bar.update(batch.n_examples)
        batch = batch.to(device)
        out = model(batch)
        p = model.probabilities(out.logits).float().cpu()
        probs.append(p.numpy())
        preds.append(model.kind.predictions(spec, p.numpy()))
        if batch.labels is not None:
            losses.append(float(model.task_loss(out, batch.labels)) * batch.n_examples)
            weights.append(batch.n_examples)
    bar.close()
    model.train(was_training)
    loss = sum(losses) / sum(weights) if weights and len(weights) == len(preds) else None
    restore = np.empty_like(by_length)
    restore[by_length] = np.arange(len(by_length))
    return np.concatenate(preds)[restore], np.concatenate(probs)[restore], loss


def score(model: TaskModel, encoded: list[EncodedExample], pad_id: int, *, batch_size: int = 64,
          device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """All metrics of the task on labelled examples, plus the mean task loss."""
    return score_and_predict(model, encoded, pad_id, batch_size=batch_size, device=device, progress=progress)[0]


def score_and_predict(model: TaskModel, encoded: list[EncodedExample], pad_id: int, *, batch_size: int = 64,
                      device: str | torch.device = "cpu", progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """`score`'s metrics and the predictions they were computed from, in the examples' order."""
    if any(x.label is None for x in encoded):
        raise GptkitError("evaluation needs a label on every example")
    preds, _, loss = infer(model, encoded, pad_id, batch_size=batch_size, device=device, progress=progress)
    gold = np.array([x.label for x in encoded])
    spec = model.spec
    metrics = model.kind.metrics(spec, preds, gold)
    metrics["loss"] = float(loss) if loss is not None else float("nan")
    return metrics, preds
