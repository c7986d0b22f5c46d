"""The task model: the GPT trunk plus the head its task type makes, and its directory on disk.

A task model directory is an ordinary model directory (config.json + model.safetensors + tokenizer)
plus `task.json` (the TaskSpec) and `head.safetensors` (W_y), so the fine-tuned trunk still loads
anywhere a GPT loads (e.g. for generation), and `load_task_model` restores the whole classifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_json
from ..errors import GptkitError
from ..interop.hf import save_pretrained
from ..interop.loading import load_model_and_tokenizer
from ..interop.weights import atomic_save_safetensors, load_safetensors
from ..model import GPT
from ..modeldir import atomic_dir
from .batching import TaskBatch
from .spec import TaskSpec

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # task types already warned about (once per process, not per checkpoint)

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
        self.kind = spec.type
        self.head: nn.Module = self.kind.make_head(spec, gpt.config.n_embd, clf_pdrop, gpt.config.initializer_range)

    def forward(self, batch: TaskBatch) -> TaskOutput:
        # Right padding needs no attention mask: under the causal mask no real token sees a later pad.
        hidden = self.gpt.transformer(batch.ids).hidden  # (N, T, C)
        return TaskOutput(self.kind.logits(self.spec, self.head, hidden, batch), hidden)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class or candidate distribution; regression values are returned unchanged."""
        return self.kind.probabilities(self.spec, logits)

    def task_loss(self, out: TaskOutput, labels: torch.Tensor) -> torch.Tensor:
        return self.kind.loss(self.spec, out.logits, labels)


# --- directory ------------------------------------------------------------------------------------


def write_task_model(model: TaskModel, tokenizer: Any, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the files of a task model directory into `directory` (which the caller makes atomic: the
    training loop writes checkpoints into a temporary directory and renames it when complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf = model.kind.hf_head(model.spec, model.head, model.gpt.config, tokenizer.pad_id)
    if hf is None and model.spec.task not in _WARNED:
        _WARNED.add(model.spec.task)
        log.warning("%s: %s; transformers loads this directory as a language model only, and gptkit's %s "
                    "holds the task head", model.spec.task, model.kind.hf_missing, HEAD_FILE)
    save_pretrained(model.gpt, directory, head=hf[0] if hf else None, head_config=hf[1] if hf else None)
    tokenizer.save(directory)
    atomic_save_safetensors(dict(model.head.state_dict()), directory / HEAD_FILE)
    atomic_write_json(directory / TASK_FILE, {**model.spec.to_json(), **({"training": extra} if extra else {})})
    return directory


def save_task_model(model: TaskModel, tokenizer: Any, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the whole directory under a temporary name, then swap it in, so a crash mid-save never
    leaves a half-written model (the previous one survives until the new one is complete)."""
    with atomic_dir(directory) as tmp:
        write_task_model(model, tokenizer, tmp, extra)
    return Path(directory)


def load_head(model: TaskModel, directory: str | Path) -> None:
    """The head's W_y from a task model directory; a head of another shape is a one-line error."""
    path = Path(directory) / HEAD_FILE
    state = load_safetensors(path)
    for key, tensor in state.items():  # load_state_dict would copy integers into the float weights as values
        if not tensor.is_floating_point():
            raise GptkitError(f"{path}: tensor {key} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                              f"head weights are floating point")
    bias = state.pop("linear.bias", None)
    if bias is not None and getattr(model.head, "linear", None) is not None and model.head.linear.bias is None:
        # a head written before W_y lost its bias (the paper's softmax(h W_y) has none): still readable
        model.head.linear.bias = nn.Parameter(bias)
    try:
        model.head.load_state_dict(state)
    except RuntimeError as e:
        raise GptkitError(f"{path}: does not fit a {model.spec.task} head ({' '.join(str(e).split())[:200]})") from None


def load_task_model(directory: str | Path, *, device: str | torch.device = "cpu") -> tuple[TaskModel, Any]:
    """A fine-tuned task model directory -> (TaskModel in eval mode, tokenizer)."""
    directory = Path(directory)
    if not (directory / TASK_FILE).exists():
        raise GptkitError(f"{directory}: not a fine-tuned task model (no {TASK_FILE}); run `gptkit finetune` first")
    spec = TaskSpec.load(directory / TASK_FILE)
    gpt, tok = load_model_and_tokenizer(directory)
    model = TaskModel(gpt, spec)
    load_head(model, directory)
    return model.to(device).eval(), tok
