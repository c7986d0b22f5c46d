"""A model directory as generation uses it: the model, its tokenizer, and the checks that they fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import GptkitError
from ..interop.loading import load_model_and_tokenizer, require_embedded
from ..model.gpt import GPT
from ..options import device as usable_device

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
        if not ids:
            if self.tokenizer.eot_id >= self.model.config.vocab_size:
                raise GptkitError("an empty prompt starts at the end-of-text token, which this model was trained "
                                  "without (it has no embedding row for it): give a prompt")
            ids = [self.tokenizer.eot_id]
        require_embedded(self.tokenizer, ids, self.model.config.vocab_size, "the prompt")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Generation ends at the end-of-text token, which ends every training document."""
        eot = getattr(self.tokenizer, "eot_id", None)
        return (eot,) if eot is not None and eot < self.model.config.vocab_size else ()


def pick_device(name: str = "auto") -> torch.device:
    """`name` as a torch device ('auto': cuda when there is one), refused in one line when this machine
    has no such device (torch would fail deep inside the first `.to()`, with its own traceback)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not usable_device(name):
        raise GptkitError(f"device {name!r}: must be {usable_device.must}")
    return torch.device(name)


def load_bundle(directory: str | Path, device: str = "auto") -> ModelBundle:
    """The model directory's model (on `device`, eval mode) and tokenizer, checked to fit each other."""
    directory = Path(directory)
    model, tokenizer = load_model_and_tokenizer(directory, device=pick_device(device))
    log.debug("loaded %s: %s", directory, model.config)
    return ModelBundle(model=model, tokenizer=tokenizer, name=directory.resolve().name, directory=directory)
