"""A preallocated key/value cache for incremental decoding (prefill once, then one token per step)."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for the tokens seen so far, plus which of them are real.

    Buffers are allocated once at `max_len` so a decode step writes in place instead of
    concatenating (which would copy the whole history every token). They are left uninitialised
    (`torch.empty`): only the first `length` slots are ever read, and zero-filling n_ctx slots for
    every layer costs ~38 MB of writes per row per generate call at the GPT-1 shape.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_dim: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        # True where the key at that slot is a real token (False for left padding).
        self.key_valid = torch.ones(batch_size, max_len, device=device, dtype=torch.bool)
        self.has_padding = False
        self.max_len = max_len
        self.length = 0  # number of slots filled (same for every row)

    @classmethod
    def for_model(cls, config, batch_size: int, max_len: int | None = None, *, device="cpu", dtype=torch.float32):
        """A cache sized for `config` (a GPTConfig); `max_len` defaults to the context window."""
        return cls(
            config.n_layer,
            batch_size,
            config.n_head,
            config.head_dim,
            max_len or config.n_ctx,
            device=device,
            dtype=dtype,
        )

    def remaining(self) -> int:
        return self.max_len - self.length

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, nh, T, hs) for `layer`; return all keys/values so far."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} tokens exceed its max_len {self.max_len}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def mark_padding(self, padding_mask: torch.Tensor) -> None:
        """Record which of the incoming tokens (B, T) are real, before the layers run."""
        start, end = self.length, self.length + padding_mask.size(1)
        self.key_valid[:, start:end] = padding_mask
        if not bool(padding_mask.all()):
            self.has_padding = True

    def advance(self, n: int) -> None:
        """Commit `n` new tokens after every layer has written them."""
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only (or repeat) the rows in `index`, e.g. to fan one prompt out to n samples."""
        self.keys = self.keys.index_select(1, index)
        self.values = self.values.index_select(1, index)
        self.key_valid = self.key_valid.index_select(0, index)
