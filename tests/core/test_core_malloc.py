"""flows.core.malloc: glibc's thresholds are set where there is a glibc, and nothing breaks elsewhere."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from flows.core import malloc

pytestmark = pytest.mark.unit


def test_the_thresholds_are_set_on_linux_and_setting_them_again_is_harmless() -> None:
    assert malloc.bound_heap_growth() is True
    assert malloc.bound_heap_growth() is True


def test_without_a_c_library_with_mallopt_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")

    def no_libc(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert malloc.bound_heap_growth() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert malloc.bound_heap_growth() is False


_REUSE = """
import ctypes, ctypes.util, resource, sys
from flows.core import malloc
if sys.argv[1] == "set":
    assert malloc.bound_heap_growth()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 16 << 20
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[faults_of_one_block() for _ in range(4)])
"""


def test_a_16_mb_block_freed_and_allocated_again_reuses_its_pages() -> None:
    """Batch-sized blocks come from the heap: only the first one faults its pages in (4,096 of 4 kB)."""
    faults = [int(n) for n in subprocess.check_output([sys.executable, "-c", _REUSE, "set"], text=True).split()]
    assert faults[0] >= 4_000  # fresh memory: every page faulted in once
    assert max(faults[1:]) < 100, faults  # reused: no page faulted in again
