"""A prepared corpus directory: meta.json plus token shards per split (see prepare.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GptkitError
from ..jsonio import field, read_json
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
    """Open a directory written by `gptkit prepare`; a missing or malformed meta.json is a GptkitError
    naming the field, whatever the file holds."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise GptkitError(f"{directory}: not a prepared corpus (no meta.json; make one with `gptkit prepare`)")
    meta = read_json(meta_path)
    if field(meta, "format", str, meta_path) != FORMAT:
        raise GptkitError(f"{meta_path}: format {meta['format']!r} is not {FORMAT!r}")
    vocab = field(meta, "vocab_size", int, meta_path)
    if vocab <= 0:
        raise GptkitError(f"{meta_path}: field 'vocab_size' must be positive, got {vocab}")
    eot = field(meta, "eot_id", int, meta_path)
    if not 0 <= eot < vocab:
        raise GptkitError(f"{meta_path}: field 'eot_id' {eot} is outside the vocabulary of {vocab}")
    _relative_path(field(meta, "tokenizer", str, meta_path), "tokenizer", meta_path)
    for name, split in field(meta, "splits", dict, meta_path).items():
        where = f"{meta_path}: split {name!r}"
        if not isinstance(split, dict):
            raise GptkitError(f"{where}: expected an object, found {type(split).__name__}")
        for shard in field(split, "shards", list, where):
            if not isinstance(shard, str):
                raise GptkitError(f"{where}: field 'shards' must list file names, found {shard!r:.60}")
            _relative_path(shard, "shards", where)
        if field(split, "tokens", int, where) < 0:
            raise GptkitError(f"{where}: field 'tokens' must be >= 0")
    return Corpus(directory, meta)


def _relative_path(value: str, key: str, where: str | Path) -> None:
    """A file named by meta.json must lie inside the corpus directory."""
    p = Path(value)
    if not value or "\0" in value or p.is_absolute() or ".." in p.parts:
        raise GptkitError(f"{where}: field {key!r} must be a path inside the corpus directory, got {value!r:.60}")
