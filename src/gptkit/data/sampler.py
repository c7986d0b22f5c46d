"""Random contiguous windows from token arrays, resumable and shardable across ranks.

GPT-1 trains on "minibatches of 64 randomly sampled, contiguous sequences of 512 tokens" (SPEC
section 3). A window of `seq_len + 1` tokens gives the inputs and, shifted by one, the targets.
Windows lie inside one shard; they may cross document boundaries (documents are separated by the
end-of-text token, which the model learns to predict).

Determinism without stored RNG state: micro-batch number `c` of the whole job (counted over all
ranks) draws its window starts from a generator seeded with `(seed, c)`. Rank r's n-th micro-batch
is number `n * world_size + r`, so the ranks read disjoint draws, 2 ranks x accumulation 1 see the
same windows as 1 rank x accumulation 2, and the sampler's whole state is the counter `n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import GptkitError


class WindowSampler:
    """`next_batch()` -> {"input_ids": (B, T) int64, "targets": (B, T) int64} on CPU."""

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        name: str = "corpus",
        pin_memory: bool = False,
    ) -> None:
        if batch_size <= 0 or seq_len <= 0:
            raise GptkitError(f"batch size and sequence length must be positive, got {batch_size} and {seq_len}")
        if not 0 <= rank < world_size:
            raise GptkitError(f"rank {rank} is outside world size {world_size}")
        self.shards = list(shards)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.pin_memory = pin_memory
        # number of valid window starts per shard: a window needs seq_len + 1 tokens
        counts = np.array([max(0, len(s) - seq_len) for s in self.shards], dtype=np.int64)
        if counts.sum() == 0:
            longest = max((len(s) for s in self.shards), default=0)
            raise GptkitError(
                f"{name}: too short for one window: needs at least {seq_len + 1} contiguous tokens in one "
                f"shard (seq_len {seq_len} + 1 for the shifted targets), the longest shard has {longest}"
            )
        self._ends = np.cumsum(counts)
        self.num_windows = int(self._ends[-1])
        self.draws = 0  # micro-batches this rank has taken

    @property
    def step_shape(self) -> tuple[int, int]:
        """(rows, tokens) of every micro-batch: what the training loop's precision probe times."""
        return self.batch_size, self.seq_len

    def next_batch(self) -> dict[str, torch.Tensor]:
        c = self.draws * self.world_size + self.rank
        rng = np.random.default_rng([self.seed, c])
        starts = rng.integers(0, self.num_windows, size=self.batch_size)
        self.draws += 1
        return self._gather(starts)

    def _gather(self, starts: np.ndarray) -> dict[str, torch.Tensor]:
        shard_idx = np.searchsorted(self._ends, starts, side="right")
        offsets = starts - np.concatenate([[0], self._ends[:-1]])[shard_idx]
        rows = np.empty((len(starts), self.seq_len + 1), dtype=np.int64)
        for i, (s, o) in enumerate(zip(shard_idx, offsets)):
            rows[i] = self.shards[s][o : o + self.seq_len + 1]
        data = torch.from_numpy(rows)
        if self.pin_memory:
            data = data.pin_memory()
        return {"input_ids": data[:, :-1].contiguous(), "targets": data[:, 1:].contiguous()}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens a batch trains on (every target), for the loop's tokens/s."""
        return batch["targets"].numel()

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws, "seed": self.seed, "world_size": self.world_size,
                "batch_size": self.batch_size, "seq_len": self.seq_len, "num_windows": self.num_windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "seq_len", "num_windows"):
            if key in state and state[key] != getattr(self, key):
                raise GptkitError(
                    f"the data sampler was saved with {key}={state[key]!r} but is now {getattr(self, key)!r}; "
                    f"resume with the same data and settings"
                )
        # The position is global: the job has drawn draws x world_size micro-batches. Another world
        # size continues from the same global count (the loop keeps micro-batches per update fixed).
        consumed = int(state["draws"]) * int(state.get("world_size", self.world_size))
        if consumed % self.world_size:
            raise GptkitError(f"the data sampler has drawn {consumed} micro-batches in all, which {self.world_size} "
                              f"ranks cannot continue evenly; resume with a world size dividing it")
        self.draws = consumed // self.world_size


def eval_windows(shards: Sequence[np.ndarray], seq_len: int, max_windows: int, *, rank: int = 0,
                 world_size: int = 1) -> list[np.ndarray]:
    """Non-overlapping windows taken in order from the start of each shard (at most `max_windows` in
    all, split across ranks): a fixed validation set, the same at every evaluation."""
    windows: list[np.ndarray] = []
    for shard in shards:
        for start in range(0, len(shard) - seq_len, seq_len):
            if len(windows) >= max_windows:
                break
            windows.append(np.asarray(shard[start : start + seq_len + 1], dtype=np.int64))
    # Every rank must get the same number of windows: evaluation ends in a collective, and a rank
    # with none (or one more) would skip (or add) it and hang the job. Too few to share: all ranks
    # evaluate all of them (the rank average is then the same value).
    if len(windows) < world_size:
        return windows
    windows = windows[: len(windows) - len(windows) % world_size]
    return windows[rank::world_size]
