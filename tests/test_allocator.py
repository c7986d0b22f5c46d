"""The training loop keeps freed memory for re-use under glibc (training/allocator.py): a step's freed
buffers stay with the process instead of going back to the kernel (to be faulted in again by the next
step), unless GPTKIT_MALLOC=default says otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

SCRIPT = """
import os, sys, torch
from gptkit.training.allocator import keep_freed_memory
on = keep_freed_memory()
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
a = [torch.ones(4 * 1024 * 1024) for _ in range(3)]  # three 16 MiB buffers, as one step's activations
held = rss()
del a
print(int(on), (held - rss()) // 2**20)  # MiB handed back to the kernel when they were freed
"""


def returned_mib(**env: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPTKIT_MALLOC", "LD_PRELOAD")} | env
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_freed_buffers_stay_with_the_process_for_the_next_step():
    on, kept = returned_mib()
    off, default = returned_mib(GPTKIT_MALLOC="default")
    assert on == 1 and off == 0
    # glibc by default unmaps each freed 16 MiB block at once (and the next step faults it in again)
    assert default >= 40, default
    assert kept <= 2, kept
