"""Writing a picture or page the user asked for: atomically, with ordinary file permissions."""

from __future__ import annotations

import os
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.interop.weights import atomic_write_bytes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_output(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all.

    The atomic writer's temp file is created 0600; a PNG or HTML page is meant to be shared (opened by
    a browser, served), so it gets the mode a plain `open()` would have given it (0666 minus umask).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise GptkitError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise GptkitError(f"{path}: is a directory; give a file name")
    atomic_write_bytes(path, data)
    os.chmod(path, 0o666 & ~_umask())
    return path
