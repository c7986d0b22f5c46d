"""Writing a picture or page the user asked for: atomically, with ordinary file permissions."""

from __future__ import annotations

from pathlib import Path

from gptkit.atomic import atomic_write_bytes
from gptkit.errors import GptkitError


def write_output(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all, with the mode a plain open() would give it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise GptkitError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise GptkitError(f"{path}: is a directory; give a file name")
    atomic_write_bytes(path, data)
    return path
