"""Which files a corpus is made of, and how each one is read (plain text or JSON lines, maybe gzipped)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import GptkitError
from .textio import MAX_PIECE_CHARS, Piece, is_jsonl, iter_file_pieces, iter_jsonl_pieces

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".gz")


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus *.txt, *.jsonl and *.gz found recursively under directories; each
    directory's files are sorted so the corpus (and its validation split) is deterministic."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
            for p in sorted(path.rglob("*")):
                if p.is_symlink() and not p.exists():
                    log.warning("%s: skipped: a symbolic link to %s, which does not exist", p, os.readlink(p))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise GptkitError(f"{path}: no such file or directory")
    return files


def iter_pieces(path: Path, text_field: str = "text", doc_split: str = "file",
                max_chars: int = MAX_PIECE_CHARS) -> Iterator[Piece]:
    """The document pieces of one input file, read by its kind (JSON lines or plain text)."""
    if is_jsonl(path):
        return iter_jsonl_pieces(path, text_field, max_chars)
    return iter_file_pieces(path, doc_split, max_chars)
