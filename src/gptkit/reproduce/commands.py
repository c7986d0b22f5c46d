"""What `gptkit reproduce` runs its numbers with: one `gptkit` command per cell (recorded with its output),
the files it writes between stages, and the task-type lookup for built-in and derived tasks."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..builtin_data.derived import DERIVED_TASKS
from ..errors import GptkitError
from .settings import BUILTIN


class ReproduceInterrupted(KeyboardInterrupt):
    """A stage stopped on a signal (a training stage after saving a checkpoint); re-running resumes it.
    `signal_name` ('SIGTERM', 'SIGINT') gives the exit status a script expects (143, 130)."""

    def __init__(self, message: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name


SIGNAL_EXITS = {130: "SIGINT", 143: "SIGTERM"}
"""The exit statuses of a `gptkit` command that stopped on a signal (and saved what it had)."""


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def task_type(task: str) -> str:
    return BUILTIN[task]["type"] if task in BUILTIN else DERIVED_TASKS[task].task_type


CommandRunner = Callable[[list[str]], tuple[int, str]]
"""Runs one `gptkit` command line (without the leading 'gptkit') -> (exit status, printed output)."""


def subprocess_runner(argv: list[str]) -> tuple[int, str]:
    """A fresh `python -m gptkit` per command: for library use. The CLI passes an in-process runner
    instead (no interpreter start-up per command); either way the recorded command is the same."""
    done = subprocess.run([sys.executable, "-m", "gptkit", *argv], stdout=subprocess.PIPE, text=True, check=False)
    return {-2: 130, -15: 143}.get(done.returncode, done.returncode), done.stdout


def run_gptkit(runner: CommandRunner, argv: list[str], log_file: Path) -> str:
    """Run one `gptkit` command; its printed output goes to `log_file` and is returned."""
    code, printed = runner(argv)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(f"$ {shlex.join(['gptkit', *argv])}\n{printed}", encoding="utf-8")
    if code in SIGNAL_EXITS:
        raise ReproduceInterrupted(f"`gptkit {argv[0]}` was stopped by {SIGNAL_EXITS[code]}", SIGNAL_EXITS[code])
    if code != 0:
        raise GptkitError(f"`{shlex.join(['gptkit', *argv])}` failed with exit status {code} (its error is above)")
    return printed
