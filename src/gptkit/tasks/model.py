"""The task model: the GPT trunk plus one head from `gptkit.model.heads`, and its directory on disk.

A task model directory is an ordinary model directory (config.json + model.safetensors + tokenizer)
plus `task.json` (the TaskSpec) and `head.safetensors` (W_y), so the fine-tuned trunk still loads
anywhere a GPT loads (e.g. for generation), and `load_task_model` restores the whole classifier.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import replace_dir
from ..errors import GptkitError
from ..interop.weights import atomic_save_safetensors, atomic_write_json, load_safetensors
from ..model import GPT, ClassifierHead, MultipleChoiceHead, SimilarityHead
from .batching import TaskBatch
from .spec import TaskSpec

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
HEAD_FILE = "head.safetensors"


@dataclass
class TaskOutput:
    """logits: (B, n_labels) class scores, (B, K) candidate scores, or (B,) regression values.
    hidden: (N, T, C) trunk states of every sequence of the batch (the LM loss reads them)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class TaskModel(nn.Module):
    """GPT trunk + the head of the task type. Only the head's W_y (and new token embeddings) are new."""

    def __init__(self, gpt: GPT, spec: TaskSpec, clf_pdrop: float = 0.1) -> None:
        super().__init__()
        self.gpt = gpt
        self.spec = spec
        n_embd, std = gpt.config.n_embd, gpt.config.initializer_range
        if spec.task == "multiple_choice":
            self.head: nn.Module = MultipleChoiceHead(n_embd, clf_pdrop, std)
        elif spec.task == "similarity":
            self.head = SimilarityHead(n_embd, spec.n_outputs, clf_pdrop, std)
        else:
            self.head = ClassifierHead(n_embd, spec.n_outputs, clf_pdrop, std)

    def forward(self, batch: TaskBatch) -> TaskOutput:
        # Right padding needs no attention mask: under the causal mask no real token sees a later pad.
        hidden = self.gpt.transformer(batch.ids).hidden  # (N, T, C)
        if self.spec.task == "similarity":
            B = batch.n_examples
            logits = self.head(hidden[:B], batch.extract[:B], hidden[B:], batch.extract[B:])
        elif self.spec.task == "multiple_choice":
            logits = self.head(hidden, batch.extract, batch.n_choices)  # (B, K)
        else:
            logits = self.head(hidden, batch.extract)
        if self.spec.regression:
            logits = logits.squeeze(-1)  # (B,)
        return TaskOutput(logits, hidden)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class or candidate distribution; regression values are returned unchanged."""
        return logits if self.spec.regression else logits.float().softmax(dim=-1)


# --- directory ------------------------------------------------------------------------------------


def write_task_model(model: TaskModel, tokenizer: Any, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the files of a task model directory into `directory` (which the caller makes atomic: the
    training loop writes checkpoints into a temporary directory and renames it when complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.gpt.save_pretrained(directory)
    tokenizer.save(directory)
    atomic_save_safetensors(dict(model.head.state_dict()), directory / HEAD_FILE)
    atomic_write_json(directory / TASK_FILE, {**model.spec.to_json(), **({"training": extra} if extra else {})})
    return directory


def save_task_model(model: TaskModel, tokenizer: Any, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the whole directory under a temporary name, then swap it in, so a crash mid-save never
    leaves a half-written model (the previous one survives until the new one is complete)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        write_task_model(model, tokenizer, tmp, extra)
        replace_dir(tmp, directory)  # swapped in: the directory exists at every moment
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_task_model(directory: str | Path, *, device: str | torch.device = "cpu") -> tuple[TaskModel, Any]:
    """A fine-tuned task model directory -> (TaskModel in eval mode, tokenizer)."""
    from ..tokenizer import GPTTokenizer

    directory = Path(directory)
    if not (directory / TASK_FILE).exists():
        raise GptkitError(f"{directory}: not a fine-tuned task model (no {TASK_FILE}); run `gptkit finetune` first")
    spec = TaskSpec.load(directory / TASK_FILE)
    gpt = GPT.from_pretrained(directory)
    model = TaskModel(gpt, spec)
    state = load_safetensors(directory / HEAD_FILE)
    try:
        model.head.load_state_dict(state)
    except RuntimeError as e:
        raise GptkitError(f"{directory / HEAD_FILE}: does not fit a {spec.task} head ({' '.join(str(e).split())[:200]})") from None
    tok = GPTTokenizer.load(directory)
    return model.to(device).eval(), tok
