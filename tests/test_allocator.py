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
small = (held - rss()) // 2**20  # MiB handed back to the kernel when they were freed
b = torch.ones(24 * 1024 * 1024)  # 96 MiB, above glibc's largest mmap threshold: a GPT-1 head gradient
held = rss()
del b
print(int(on), small, (held - rss()) // 2**20)
"""


def returned_mib(**env: str) -> tuple[int, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPTKIT_MALLOC", "LD_PRELOAD")} | env
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def test_freed_buffers_stay_with_the_process_for_the_next_step():
    on, kept, kept_large = returned_mib()
    off, default, default_large = returned_mib(GPTKIT_MALLOC="default")
    assert on == 1 and off == 0
    # glibc by default unmaps each freed 16 MiB block at once (and the next step faults it in again)
    assert default >= 40, default
    assert default_large >= 90, default_large
    assert kept <= 2, kept
    assert kept_large <= 2, kept_large  # no mmap threshold can keep this one: blocks get no mappings


TRAIN_THEN_FREE = """
import os, numpy as np, torch
from gptkit.data.sampler import WindowSampler
from gptkit.model import GPT, preset
from gptkit.training import TrainConfig, build_optimizer, constant, lm_objective, train
torch.manual_seed(0)
model = GPT(preset("tiny", vocab_size=64, n_ctx=32))
stream = np.tile(np.arange(16, dtype=np.uint16), 100)
train(model, lm_objective, WindowSampler([stream], batch_size=4, seq_len=32, seed=0), build_optimizer(model, lr=1e-3),
      constant(1e-3), TrainConfig(max_steps=2, progress=False), flops_per_token=1e6, peak_flops=1e11)
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
a = [torch.ones(4 * 1024 * 1024) for _ in range(3)]
held = rss()
del a
small = (held - rss()) // 2**20
b = torch.ones(24 * 1024 * 1024)  # 96 MiB: above every mmap threshold glibc allows
held = rss()
del b
print(small, (held - rss()) // 2**20)
"""


def test_the_training_loop_keeps_freed_memory_by_default():
    """No call, flag or setting by the user: a plain train() turns it on (and the opt-out turns it off)."""
    def returned(**env: str) -> tuple[int, int]:
        env = {k: v for k, v in os.environ.items() if k not in ("GPTKIT_MALLOC", "LD_PRELOAD")} | env
        out = subprocess.run([sys.executable, "-c", TRAIN_THEN_FREE], capture_output=True, text=True,
                             env={**env, "OMP_NUM_THREADS": "1"}, timeout=120, check=True).stdout.split()
        return int(out[-2]), int(out[-1])

    small, large = returned()
    assert small <= 2 and large <= 2, (small, large)
    small, large = returned(GPTKIT_MALLOC="default")
    assert small >= 40 and large >= 90, (small, large)
