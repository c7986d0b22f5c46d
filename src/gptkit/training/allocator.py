"""Keep freed memory for the next step instead of returning it to the kernel (glibc malloc only).

A training step frees and re-allocates the same few hundred activation and gradient buffers every
time. glibc's malloc gives large freed blocks back to the kernel (blocks above its mmap threshold are
unmapped, and the top of the heap is trimmed), so the next step faults the same pages in again and the
kernel zeroes them: a fresh demo run counted tens of millions of minor page faults. Measured on the
demo's 6 x 256 model (bf16, one thread, 2-core Xeon): 60,000-79,000 page faults and 93-147 ms of
system time per step by default, 17,000 and 24-33 ms with the settings below, i.e. about 10% of the
step's CPU time (docs/performance.md).

The settings: every block comes from the heap (no block is given its own mapping, whatever its
size), and the heap is never trimmed. Raising the mmap threshold alone stops at glibc's cap of 32 MiB,
which leaves out the vocabulary-sized buffers of a GPT-1-sized model (its 40,478 x 768 head weight's
bf16 copy and gradients, 62-124 MB, the loss's chunk of logits, 67 MB): with the threshold alone a
GPT-1-shaped step still took 62,000-115,000 page faults; with no mappings, none once the heap has
grown (2 threads, 4 x 512 tokens, quiet Xeon: fp32 5.09-5.27 -> 4.84-4.89 s per step, bf16 1.97-2.15
-> 1.92-1.94 s; peak RSS unchanged, docs/performance.md). The process keeps the memory of its largest
step until it exits, which a training process would re-use anyway. Set GPTKIT_MALLOC=default to leave
glibc as it is. Under another allocator (LD_PRELOAD of tcmalloc or jemalloc) or another C library, nothing is
changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc <malloc.h>
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit (HEAP_MAX_SIZE / 2)
NEVER_TRIM = 2**31 - 1  # mallopt takes an int
NO_MAPPINGS = 0  # M_MMAP_MAX: how many blocks may have their own mapping

_done: bool | None = None


def glibc_is_the_allocator() -> bool:
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc")):
        return False
    return platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("GPTKIT_MALLOC", "").lower() == "default" or not glibc_is_the_allocator():
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the thresholds also turns off glibc's dynamic ones. A block
    # too large for a thread's own arena is then served by the main heap (glibc retries there), and if
    # the main heap cannot grow, glibc still maps memory for it as a last resort.
    _done = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
             and mallopt(M_MMAP_MAX, NO_MAPPINGS) == 1)
    log.debug("glibc malloc: freed blocks kept for re-use (%s)", "on" if _done else "refused")
    return _done
