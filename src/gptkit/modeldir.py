"""Directories written whole: every model directory gptkit produces (a run's `model/`, a fine-tuning
run's `best/`, a saved task model) is filled under a temporary name next to its target, fsynced,
and only then swapped in, so a crash at any moment leaves the previous complete directory or the
new one. The one exporter of model directories; depends on nothing else in gptkit but `atomic`.

Temporary names start with `.tmp-` and discarded directories with `.trash-`: a run's
`CheckpointManager.clean_stale` removes what a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .atomic import fsync_dir, replace_dir


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (before a rename makes them visible)."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def discard(path: Path) -> None:
    """Delete a directory by first renaming it away, so no half-deleted one is ever seen by its name."""
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def swap_in(tmp: Path, target: Path) -> None:
    """Replace `target` (if any) by the complete directory `tmp`; `target` is never absent
    (`atomic.replace_dir` exchanges the two where the kernel can)."""
    replace_dir(tmp, target)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary directory next to `target`; on a clean exit it is fsynced and swapped in for
    `target`, on an exception it is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_dir(source: str | Path, target: str | Path, *, skip: Iterable[str] = (), link: bool = False) -> Path:
    """Make `target` a copy of `source` without the files named in `skip` (e.g. a checkpoint's
    optimizer state), atomically. `link` hard-links the files instead of copying (no extra space;
    safe because gptkit never rewrites a file in place)."""
    skipped = set(skip)
    target = Path(target)
    with atomic_dir(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=_link_or_copy if link else shutil.copy2,
                        ignore=lambda d, names: [n for n in names if n in skipped])
    return target
