"""A prepared corpus directory: meta.json plus token shards per split (see prepare.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GptkitError
from .shards import read_header, read_shard

FORMAT = "gptkit-corpus"


@dataclass
class Corpus:
    directory: Path
    meta: dict

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer the shards were written with (saved inside the corpus directory)."""
        return self.directory / self.meta["tokenizer"]

    @property
    def splits(self) -> list[str]:
        return sorted(self.meta["splits"])

    def split(self, name: str) -> list[np.ndarray]:
        """The shards of a split as read-only memmaps, in order."""
        if name not in self.meta["splits"]:
            raise GptkitError(f"{self.directory / 'meta.json'}: no split {name!r} (splits: {', '.join(self.splits)})")
        arrays = []
        for shard in self.meta["splits"][name]["shards"]:
            path = self.directory / shard
            header = read_header(path)
            if header["vocab_size"] != self.vocab_size:
                raise GptkitError(f"{path}: written for vocab_size {header['vocab_size']}, meta.json says {self.vocab_size}")
            arrays.append(read_shard(path))
        return arrays

    def num_tokens(self, name: str) -> int:
        return int(self.meta["splits"][name]["tokens"]) if name in self.meta["splits"] else 0


def load_corpus(directory: str | Path) -> Corpus:
    """Open a directory written by `gptkit prepare`; a missing or malformed meta.json is a GptkitError."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise GptkitError(f"{directory}: not a prepared corpus (no meta.json; make one with `gptkit prepare`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptkitError(f"{meta_path}: unreadable ({e})") from None
    for key in ("format", "vocab_size", "eot_id", "splits", "tokenizer"):
        if not isinstance(meta, dict) or key not in meta:
            raise GptkitError(f"{meta_path}: missing field {key!r}")
    if meta["format"] != FORMAT:
        raise GptkitError(f"{meta_path}: format {meta['format']!r} is not {FORMAT!r}")
    return Corpus(directory, meta)
