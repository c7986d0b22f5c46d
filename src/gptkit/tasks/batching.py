"""Encoded examples -> padded tensors: right padding with the pad token, a pad mask, and the extract
position of every sequence given explicitly (with right padding it is not the last column)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch

from .spec import TaskSpec
from .transforms import EncodedExample


@dataclass
class TaskBatch:
    """A batch of B examples as N sequences, in the order the task type gives them: N = B
    (classification, entailment), 2B (similarity: the A$B orders, then the B$A orders), or B*K
    (multiple choice: each example's K candidates adjacent).

    ids: (N, T) token ids, right-padded with the pad id.
    mask: (N, T) bool, True on real tokens.
    extract: (N,) position of `<e>` in each row.
    labels: (B,) long class/answer indices, float targets (regression), or None (unlabelled).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    extract: torch.Tensor
    labels: torch.Tensor | None
    n_examples: int
    n_choices: int = 1

    def to(self, device: torch.device | str) -> TaskBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device, non_blocking=True)
        return TaskBatch(**moved)


def collate(examples: Sequence[EncodedExample], pad_id: int, spec: TaskSpec) -> TaskBatch:
    """Stack examples into one batch, padding to the longest sequence in it (not to n_ctx: the released
    code shrinks the context to the longest example for the same saving). The task type orders the rows."""
    kind = spec.type
    per_example = [x.sequences for x in examples]
    seqs = kind.batch_sequences(per_example)
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    extract = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
    labels = None
    if all(x.label is not None for x in examples):
        labels = torch.tensor([x.label for x in examples], dtype=kind.label_dtype(spec))
    return TaskBatch(ids, mask, extract, labels, len(examples), kind.choices_per_example(per_example))


def iterate_batches(examples: Sequence[EncodedExample], batch_size: int, pad_id: int, spec: TaskSpec) -> Iterator[TaskBatch]:
    """In-order batches (evaluation and prediction)."""
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start : start + batch_size], pad_id, spec)
