"""SIGTERM/SIGINT: finish the current step, save, and stop, instead of dying mid-update.

The first signal sets a flag the loop checks after each step; a second SIGINT interrupts at once
(the usual escape hatch when saving hangs)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def exit_status(signal_name: str | None) -> int:
    """The status a shell gives a process killed by that signal (128 + its number: SIGTERM 143,
    SIGINT 130), for a command that stopped cleanly on it; 1 for a stop by another rank."""
    signum = getattr(signal, signal_name or "", None)
    return 128 + int(signum) if isinstance(signum, signal.Signals) else 1


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into `self.signal_name` (None until one arrives)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, name: str) -> None:
        """Ask the loop to stop after the current step (what the signal handler does)."""
        self.signal_name = name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s received: finishing the current step, saving a checkpoint, then stopping "
                    "(SIGINT again to abort without saving)", name)
        self.request(name)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
