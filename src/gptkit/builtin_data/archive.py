"""Read named members out of a tar or zip archive in memory: nothing is extracted to disk.

Blind extraction of a downloaded archive can write outside the target directory (path traversal);
reading only the members we name, as bytes, cannot.
"""

from __future__ import annotations

import fnmatch
import io
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import GptkitError


def _read_matching(data: bytes, patterns: Iterable[str], label: str) -> dict[str, bytes]:
    """Regular-file members whose names match any of `patterns`; every other member is left unread."""
    patterns = tuple(patterns)

    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        with zipfile.ZipFile(buffer) as zf:
            return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir() and wanted(i.filename)}
    buffer.seek(0)
    try:
        with tarfile.open(fileobj=buffer, mode="r:*") as tf:
            return {m.name: tf.extractfile(m).read() for m in tf if m.isfile() and wanted(m.name)}
    except (tarfile.TarError, EOFError, OSError) as e:
        raise GptkitError(f"{label}: not a readable tar or zip archive ({e})") from e


def read_members(path: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    """Members of the archive at `path` matching the patterns, keyed by name.

    A pattern `outer!inner` reads member `outer` (itself an archive) and then `inner` inside it, so the
    movie-review ratings can be read from the tarball nested inside the vaderSentiment sdist.
    Each pattern must match at least one member, otherwise the archive is not the one we expect.
    """
    outer_patterns = [p.partition("!")[0] for p in patterns]
    members = _read_matching(Path(path).read_bytes(), outer_patterns, str(path))
    found: dict[str, bytes] = {}
    for pattern in patterns:
        outer, _, inner = pattern.partition("!")
        matched = sorted(n for n in members if fnmatch.fnmatchcase(n, outer))
        if not matched:
            raise GptkitError(f"{path}: no archive member matches {outer!r}")
        for name in matched:
            if not inner:
                found[name] = members[name]
                continue
            nested = _read_matching(members[name], [inner], f"{path}!{name}")
            if not nested:
                raise GptkitError(f"{path}!{name}: no archive member matches {inner!r}")
            for hit, content in sorted(nested.items()):
                found[f"{name}!{hit}"] = content
    return found
