"""Atomic file writes: a temp file in the target's directory, fsync, rename, fsync the directory.

A reader (or a resume after kill -9) sees the old file or the new one, never half of one. Used by
every module that writes user-visible files; depends on nothing else in gptkit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def default_file_mode() -> int:
    """The mode a plain open() would give a new file: 0666 minus the umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name next to `path` for a writer that wants a file name (e.g. safetensors). On a
    clean exit the file is fsynced, given the ordinary mode and renamed over `path`; on an exception
    it is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a binary temp file next to `path`; on a clean exit it replaces `path` (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (to tell a live writer's temp files or lock from ones a
    killed process left behind)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:
        return False
    return True


# --- replacing a whole directory ----------------------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the platform or the
    filesystem cannot, so the caller falls back."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put the complete directory `new` in place of `target` so that `target` is never absent: where
    the kernel can swap two names in one step, the old and new directories are exchanged and the old
    one (now at `new`) is deleted; elsewhere the old one is renamed aside first (a window of two
    renames). `new` must be on the same filesystem, fully written and fsynced."""
    new, target = Path(new), Path(target)
    if target.exists() and not target.is_symlink() and target.is_dir():
        if _exchange(new, target):
            fsync_dir(target.parent)
            shutil.rmtree(new, ignore_errors=True)
            return
        aside = target.with_name(f".trash-{target.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, aside)
        os.replace(new, target)
        fsync_dir(target.parent)
        shutil.rmtree(aside, ignore_errors=True)
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    os.replace(new, target)
    fsync_dir(target.parent)
