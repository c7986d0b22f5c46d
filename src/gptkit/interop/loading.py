"""The one loader of a model directory together with its tokenizer, and the check that they fit.

`generate`, `serve`, `inspect`, `zeroshot`, `evaluate`/`predict` (task models) and `finetune --init`
all open directories here, so a tokenizer that does not belong to the model is the same one-line
error everywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import GptkitError
from ..model import GPT
from ..tokenizer import GPTTokenizer
from .hf import load_pretrained


def load_tokenizer(path: str | Path, *, hint: str = "") -> GPTTokenizer:
    """A tokenizer.json, a directory holding one, or a vocab/merges directory."""
    path = Path(path)
    if not path.exists():
        raise GptkitError(f"{path}: no such tokenizer file or directory")
    try:
        return GPTTokenizer.load(path)
    except GptkitError as e:
        if hint:
            raise GptkitError(f"{e}; {hint}") from None
        raise


def check_vocab(tok: GPTTokenizer, model: GPT, tok_path: Path, model_dir: Path) -> None:
    """Every id the tokenizer can produce must have an embedding row."""
    if tok.vocab_size > model.config.vocab_size:
        raise GptkitError(
            f"{tok_path}: the tokenizer has {tok.vocab_size} tokens but the model in {model_dir} embeds only "
            f"{model.config.vocab_size} (config.json field vocab_size): they do not belong together"
        )


def load_model_and_tokenizer(
    model_dir: str | Path, tokenizer: str | Path | None = None, *, device: str | torch.device = "cpu",
    check: bool = True,
) -> tuple[GPT, GPTTokenizer]:
    """The model (in eval mode, on `device`) and its tokenizer.

    A gptkit model directory holds both; `tokenizer` overrides where the tokenizer is read from (for
    HF directories that ship weights only). `check=False` leaves the vocabulary check to the caller
    (fine-tuning grows the embedding for new task tokens instead)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise GptkitError(f"{model_dir}: not a model directory")
    model = load_pretrained(model_dir, device=device).eval()
    tok_path = Path(tokenizer) if tokenizer is not None else model_dir
    # an HF directory may ship weights only: say how to point elsewhere
    tok = load_tokenizer(tok_path, hint="give the tokenizer with --tokenizer PATH" if tokenizer is None else "")
    if check:
        check_vocab(tok, model, tok_path, model_dir)
    return model, tok
