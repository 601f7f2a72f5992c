"""reuse_freed_memory: glibc's thresholds set where the C library is glibc, a clean no-op elsewhere."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from metalab.accel import allocator

#: a child process: malloc + touch + free a 16 MiB block, then count the page faults of doing it again
FAULTS_OF_A_SECOND_BLOCK = """
import ctypes, resource, sys
from metalab.accel.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 16 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_block_is_reused_without_new_page_faults():
    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_SECOND_BLOCK, mode], capture_output=True, text=True,
                              check=True)
        return int(done.stdout)

    assert faults("default") > 2000  # 16 MiB of fresh 4 KiB pages, mapped again
    assert faults("reuse") < 100  # the same pages, still in the heap


def test_other_platforms_keep_their_allocator(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.reuse_freed_memory.__wrapped__() is False
