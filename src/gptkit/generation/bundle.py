"""A model directory as generation uses it: the model, its tokenizer, and the checks that they fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import GptkitError
from ..model.gpt import GPT

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """What `gptkit generate` and `gptkit serve` load from a directory."""

    model: GPT
    tokenizer: Any  # a gptkit.tokenizer.GPTTokenizer (typed loosely: tests may pass a stand-in)
    name: str
    directory: Path | None = None

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt; an empty prompt conditions on the end-of-text token, i.e. generation
        starts as at a document boundary (the model needs at least one token)."""
        ids = self.tokenizer.encode(text) if text else []
        return ids or [self.tokenizer.eot_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Generation ends at the end-of-text token, which ends every training document."""
        eot = getattr(self.tokenizer, "eot_id", None)
        return (eot,) if eot is not None and eot < self.model.config.vocab_size else ()


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_bundle(directory: str | Path, device: str = "auto") -> ModelBundle:
    """Load `GPT.from_pretrained(dir)` and `GPTTokenizer.load(dir)`; their vocabularies must agree."""
    from ..tokenizer import GPTTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise GptkitError(f"{directory}: not a model directory")
    model = GPT.from_pretrained(directory).to(pick_device(device)).eval()
    tokenizer = GPTTokenizer.load(directory)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise GptkitError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size} embeddings (config.json field vocab_size)"
        )
    log.debug("loaded %s: %s", directory, model.config)
    return ModelBundle(model=model, tokenizer=tokenizer, name=directory.resolve().name, directory=directory)
