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
    """Every id plain text can encode to must have an embedding row. Special tokens past the model's
    rows are allowed (a model pre-trained on the paper's 40,478-entry vocabulary, or GPT-2's 50,257,
    never saw the task tokens gptkit appends): a prompt that uses one is refused where it is encoded
    (`require_embedded`)."""
    rows = model.config.vocab_size
    if tok.vocab_size <= rows:
        return
    if tok.text_vocab_size() > rows:
        raise GptkitError(
            f"{tok_path}: the tokenizer has {tok.vocab_size} tokens but the model in {model_dir} embeds only "
            f"{rows} (config.json field vocab_size): they do not belong together"
        )


def require_embedded(tok: GPTTokenizer, ids: list[int], rows: int, what: str) -> None:
    """Refuse ids past a model's `rows` embedding rows: special tokens the tokenizer has and the model
    was trained without (the paper's vocabulary has no end-of-text or task tokens, GPT-2's no task
    tokens), which `check_vocab` lets load."""
    bad = next((i for i in ids if i >= rows), None)
    if bad is None:
        return
    if bad == getattr(tok, "unk_id", None):
        raise GptkitError(f"{what} has a character the vocabulary cannot spell, and this model has no embedding "
                          "row for the unknown token that stands for it")
    raise GptkitError(f"{what} holds the special token {tok.id_to_token(bad)} (id {bad}), which this model was "
                      f"trained without: it embeds only ids 0..{rows - 1}")


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
