"""Opening what the inspection commands look at: a model directory with its tokenizer, and a prompt."""

from __future__ import annotations

from pathlib import Path

import torch

from gptkit.errors import GptkitError
from gptkit.model.gpt import GPT
from gptkit.tokenizer import GPTTokenizer


def load_model_and_tokenizer(model_dir: str | Path, tokenizer: str | Path | None = None) -> tuple[GPT, GPTTokenizer]:
    """The model (in eval mode: no dropout in what is shown) and its tokenizer.

    A gptkit model directory holds both; `tokenizer` overrides where the tokenizer is read from (a
    tokenizer.json, a directory, or a vocab/merges directory) for HF directories that lack one.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise GptkitError(f"{model_dir}: not a model directory")
    model = GPT.from_pretrained(model_dir).eval()
    tok_path = Path(tokenizer) if tokenizer is not None else model_dir
    if not tok_path.exists():
        raise GptkitError(f"{tok_path}: no such tokenizer file or directory")
    try:
        tok = GPTTokenizer.load(tok_path)
    except GptkitError as e:
        if tokenizer is None:  # an HF directory may ship weights only: say how to point elsewhere
            raise GptkitError(f"{e}; give the tokenizer with --tokenizer PATH") from None
        raise
    if tok.vocab_size > model.config.vocab_size:
        raise GptkitError(
            f"{tok_path}: tokenizer has {tok.vocab_size} tokens but the model in {model_dir} embeds only "
            f"{model.config.vocab_size} (config.json vocab_size): they do not belong together"
        )
    return model, tok


def encode_prompt(tok: GPTTokenizer, text: str, n_ctx: int) -> torch.Tensor:
    """Token ids (1, T) of `text`; an empty or over-long prompt is a user error, not a crash."""
    ids = tok.encode(text)
    if not ids:
        raise GptkitError("the text encodes to no tokens; give some text to inspect")
    if len(ids) > n_ctx:
        raise GptkitError(f"the text is {len(ids)} tokens, more than the model's context window n_ctx={n_ctx}")
    return torch.tensor([ids], dtype=torch.long)
