"""The run directory as a whole: claiming it (an exclusive lock), refusing accidental reuse,
resuming the right kind of run from its newest intact checkpoint.

    RUN_DIR/run.json     what made this directory: its kind ("pretrain", "finetune", ...) and inputs
    RUN_DIR/.lock        the pid of the process using it (created with O_EXCL; see RunLock)

Checkpoints inside it are CheckpointManager's business (checkpoint.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import time
from pathlib import Path

from ..atomic import atomic_write_json, pid_alive
from ..errors import GptkitError
from ..jsonio import field, read_json
from .checkpoint import RUN_FILE, CheckpointManager

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunLock:
    """One process at a time per run directory: `RUN_DIR/.lock` is created with O_EXCL and holds
    the owner's pid. A lock whose pid is no longer running (kill -9, power loss) is taken over with
    a warning; a live owner's lock is a GptkitError naming it. The same process may claim a
    directory again (a script that trains twice); the recipe releases it when its run ends
    (`release_dir`), or the process's exit does."""

    _held: dict[Path, RunLock] = {}

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        key = Path(run_dir).resolve()
        if key in cls._held:
            return cls._held[key]
        lock = cls(Path(run_dir))
        lock._take()
        cls._held[key] = lock
        return lock

    def _take(self) -> None:
        for _ in range(3):  # a stale lock removed by us (or a rival) once, then created afresh
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return
        raise GptkitError(f"{self.path}: could not take the run directory's lock (another process keeps taking it)")

    def _handle_existing(self) -> None:
        owner = _read_pid(self.path)
        if owner is not None and owner != os.getpid() and pid_alive(owner):
            raise GptkitError(f"{self.path.parent}: in use by process {owner} (lock file {self.path}); wait for it to "
                              f"finish or stop it; remove the lock file only if that process is not gptkit")
        # Dead owner (or our own pid from a forked parent's lock): rename it away, which only one
        # contender can do, then retry the exclusive create.
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        log.warning("%s: taking over the lock of process %s, which is no longer running", self.path.parent,
                    owner if owner is not None else "(unreadable pid)")

    @classmethod
    def release_dir(cls, run_dir: str | Path) -> None:
        """Release this process's lock on `run_dir`, if it holds one (a recipe, when its run ends)."""
        lock = cls._held.get(Path(run_dir).resolve())
        if lock is not None:
            lock.release()

    def release(self) -> None:
        RunLock._held = {k: v for k, v in RunLock._held.items() if v is not self}
        if _read_pid(self.path) == os.getpid():
            try:
                self.path.unlink(missing_ok=True)
            except OSError as e:
                # Released on the way out, often from a `finally` after the run failed (the run
                # directory made read-only mid-run): that run's own error is what the user must see.
                # A lock left behind names a process that has exited, and the next run takes it over.
                log.warning("%s: could not remove the lock file (%s); the next run takes it over", self.path,
                            e.strerror or e)


@atexit.register
def _release_all() -> None:
    for lock in list(RunLock._held.values()):
        lock.release()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def prepare_run_dir(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                    kind: str = "train", info: dict | None = None) -> Path | None:
    """Claim `run_dir` (RunLock), make it ready and return the checkpoint to resume from (None:
    start fresh).

    A directory that already holds files is refused unless `resume` (continue from its newest
    intact checkpoint; a run of another kind is refused) or `overwrite` (delete the previous run,
    but only if it is a gptkit run directory: `overwrite` never deletes a directory gptkit did not
    make). Call on every rank; only rank 0 locks and writes.
    """
    from .ranks import barrier, rank_info

    run_dir = Path(run_dir)
    main = rank_info().is_main
    if run_dir.exists() and not run_dir.is_dir():
        raise GptkitError(f"{run_dir}: exists and is not a directory")
    if resume and overwrite:
        raise GptkitError("resume and overwrite contradict each other; pass one")
    existed = run_dir.is_dir()
    lock = None
    if main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock.acquire(run_dir)
        except OSError as e:  # a parent that is a file, a read-only parent, no space left
            where = f" ({e.filename})" if e.filename and str(e.filename) != str(run_dir) else ""
            raise GptkitError(f"{run_dir}: cannot create the run directory or its lock: "
                              f"{e.strerror or e}{where}") from None
    try:
        return _prepare(run_dir, main, resume=resume, overwrite=overwrite, kind=kind, info=info, barrier=barrier)
    except BaseException:
        if lock is not None:
            lock.release()
            if not existed:
                shutil.rmtree(run_dir, ignore_errors=True)  # a refused command leaves nothing behind
        raise


def _prepare(run_dir: Path, main: bool, *, resume: bool, overwrite: bool, kind: str, info: dict | None,
             barrier) -> Path | None:
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_FILE] if run_dir.is_dir() else []
    occupied = bool(entries)
    is_run = (run_dir / RUN_FILE).is_file()
    if occupied and resume:
        if not is_run:
            raise GptkitError(f"{run_dir}: not a gptkit run directory (no {RUN_FILE}); nothing to resume")
        check_run_kind(run_dir, kind)
        found = CheckpointManager(run_dir).resumable()
        if found is None:
            log.warning("%s: no complete checkpoint yet; starting from step 0", run_dir)
        return found
    if occupied and not overwrite and is_run and _saved_nothing(run_dir, entries, kind):
        # Stopped before its first checkpoint (a SIGTERM in its first seconds): nothing to resume or
        # to lose, so the same command starts it again instead of asking for --resume or --overwrite.
        log.warning("%s: holds a %s run stopped before it saved anything; starting it afresh", run_dir, kind)
    elif occupied and not overwrite:
        if not is_run:
            raise GptkitError(f"{run_dir}: already holds files and is not a gptkit run directory (no {RUN_FILE}); "
                              "choose another directory (--overwrite only replaces a gptkit run)")
        raise GptkitError(f"{run_dir}: already holds a run; pass --resume to continue it or --overwrite to replace "
                          "it (or choose another directory)")
    if occupied and overwrite and not is_run:
        raise GptkitError(f"{run_dir}: not a gptkit run directory (no {RUN_FILE}); refusing to delete its files")
    # Every rank has looked at the directory before rank 0 changes it: a slower rank must not see
    # rank 0's fresh run.json and take it for an earlier run.
    barrier()
    if main:
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        atomic_write_json(run_dir / RUN_FILE, {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                **(info or {})})
    barrier()
    return None


def _saved_nothing(run_dir: Path, entries: list[Path], kind: str) -> bool:
    """A run of this kind that wrote only its start (run.json, maybe metrics lines) and no complete
    checkpoint or model: what a stop in its first seconds leaves."""
    if not {p.name for p in entries} <= {RUN_FILE, "metrics.jsonl", "checkpoints"}:
        return False
    try:
        check_run_kind(run_dir, kind)
    except GptkitError:
        return False
    return not CheckpointManager(run_dir).complete()


def check_run_kind(run_dir: Path, kind: str) -> None:
    """Refuse to resume, say, a fine-tuning run as a pre-training one (`prepare_run_dir` does this on
    every resume). A run.json that does not parse is refused too: it is written atomically, so a
    damaged one means the directory was changed by hand, and which run it holds is unknown."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return  # not a run directory: the caller says so in its own words
    try:
        info = read_json(path)
        found = field(info, "kind", str, path) if "kind" in info else None
    except GptkitError as e:
        raise GptkitError(f"{e}; it says which run this directory holds, so it cannot be resumed: restore the "
                          f"file, or start afresh with --overwrite") from None
    if found not in (None, kind):
        raise GptkitError(f"{run_dir}: holds a {found!r} run, not {kind!r}")
