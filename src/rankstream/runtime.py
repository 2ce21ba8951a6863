"""Process-wide CPU runtime settings: threads, denormals and the C allocator.

glibc's malloc hands large freed blocks back to the kernel (``munmap`` / heap trimming) and
raises its mmap threshold only as blocks are freed, so the many short-lived megabyte tensors
of an eager PyTorch forward pass (padded batches, attention buffers, score matrices) are
mapped, page-faulted and unmapped again on every call. On a VM a page fault is costly (this
project's 2-core VM, Beauty latency benchmark: 472k -> 71k minor faults, system time halved
with the settings below; SASRec's encoder 8.2 -> 5.8 ms a batch of 128 in one A/B pair;
results identical). :func:`keep_freed_memory` asks malloc to
keep freed memory in the process for reuse, the usual advice for CPU inference (PyTorch's
performance guide recommends jemalloc / tcmalloc for the same reason); the memory stays
bounded by the process's own peak. ``RANKSTREAM_KEEP_FREED_MEMORY=0`` leaves malloc's
defaults (for A/B measurements, or a process that preloads another allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

import torch

log = logging.getLogger("rankstream")

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc malloc.h
_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's ceiling (32 MiB)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the heap and never trim it (glibc only; once per
    process). Returns whether the settings took; elsewhere it changes nothing."""
    if os.environ.get("RANKSTREAM_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)))
    if not ok:
        log.debug("mallopt refused the allocator settings; running with malloc's defaults")
    return ok


def configure_cpu(threads: int) -> None:
    """Threads for torch's intra-op pool, denormals flushed, the allocator tuned."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormal floats make exp/matmul many times slower on CPU
    keep_freed_memory()
