"""Keep freed tensor memory in the process for reuse (glibc's malloc), instead of returning it to the OS.

PyTorch's CPU tensors come from ``malloc``. glibc serves large blocks (from 128 KiB, adapting up to
32 MiB) with fresh ``mmap`` pages and gives them back on ``free``, so a meta-iteration that creates
and frees the same large activation for every task pays the kernel for zeroing and mapping its pages every
time (page faults and system time: benchmarks/speed/RESULTS.md, "Memory reuse"). Raising the
mmap and trim thresholds (what ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...`` does at start-up,
and what jemalloc or tcmalloc do by design) keeps freed blocks in the heap, where the next tensor of
that size finds them. The price: the resident memory stays at its peak instead of shrinking between
peaks, which a training process reaches again at every step anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap and stay there when freed.
THRESHOLD_BYTES = 1 << 30


@functools.cache
def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to :data:`THRESHOLD_BYTES` for this process (once).

    Returns True when they were set; False where the C library is not glibc (macOS, Windows, musl),
    which then keeps its own behaviour.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, THRESHOLD_BYTES))
