"""The training batches of a fine-tuning run: shuffled epochs, resumable, sliced per rank."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import GptkitError
from .batching import TaskBatch, collate
from .spec import TaskSpec
from .transforms import EncodedExample


class EpochBatches:
    """Shuffled epochs over the encoded training set; resumable (a fresh order per epoch, drawn from
    the seed and the epoch number, so the state is two integers)."""

    def __init__(self, examples: list[EncodedExample], batch_size: int, pad_id: int, spec: TaskSpec, *,
                 seed: int, device: str | torch.device = "cpu",
                 rank: int = 0, world_size: int = 1) -> None:
        self.examples = examples
        self.batch_size = batch_size
        # Under torchrun every rank walks the same epoch order and takes its own slice of each global
        # batch of batch_size x world_size examples (batch_size is per rank, as in pre-training).
        self.rank, self.world_size = rank, world_size
        self.pad_id = pad_id
        self.spec = spec
        self.seed = seed
        self.device = device
        self.epoch = 0
        self.index = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / (self.batch_size * self.world_size))

    @property
    def step_shape(self) -> tuple[int, int]:
        """(rows, tokens) of a full micro-batch padded to the longest sequence of the training set: what
        the training loop's precision probe times (a batch pads to its own longest, rarely far shorter)."""
        rows = self.batch_size * max((len(x.sequences) for x in self.examples[:1]), default=1)
        return rows, max((len(s) for x in self.examples for s in x.sequences), default=1)

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))

    def next_batch(self) -> TaskBatch:
        if self.index >= len(self.examples):
            self.epoch, self.index = self.epoch + 1, 0
        order = self._order()[self.index : self.index + self.batch_size * self.world_size]
        self.index += len(order)
        if self.world_size > 1:
            # an epoch's last global batch is topped up from the start of the order, so that every
            # rank gets a full slice (a rank with nothing to do would leave the others' all-reduce hanging)
            short = self.batch_size * self.world_size - len(order)
            if short > 0:
                order = np.concatenate([order, np.resize(self._order(), short)])
            order = order[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        batch = collate([self.examples[i] for i in order], self.pad_id, self.spec)
        # The loop moves tensors in dicts/tuples; a TaskBatch moves itself.
        return batch.to(self.device)

    def count_tokens(self, batch: TaskBatch) -> int:
        """Real (unpadded) tokens in a batch, for the loop's tokens/s."""
        return int(batch.mask.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "n": len(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n") != len(self.examples) or state.get("seed") != self.seed:
            raise GptkitError("the checkpoint was written for another training file or seed; cannot resume")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
