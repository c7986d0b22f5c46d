"""A prompt as the inspection commands take it (the model and tokenizer come from
`gptkit.interop.loading`)."""

from __future__ import annotations

import torch

from gptkit.errors import GptkitError
from gptkit.interop.loading import require_embedded
from gptkit.model import GPTConfig
from gptkit.tokenizer import GPTTokenizer


def encode_prompt(tok: GPTTokenizer, text: str, config: GPTConfig) -> torch.Tensor:
    """Token ids (1, T) of `text`; an empty or over-long prompt is a user error, not a crash."""
    ids = tok.encode(text)
    if not ids:
        raise GptkitError("the text encodes to no tokens; give some text to inspect")
    require_embedded(tok, ids, config.vocab_size, "the text")
    n_ctx = config.n_ctx
    if len(ids) > n_ctx:
        raise GptkitError(f"the text is {len(ids)} tokens, more than the model's context window n_ctx={n_ctx}")
    return torch.tensor([ids], dtype=torch.long)
