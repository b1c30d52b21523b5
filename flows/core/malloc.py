"""glibc's allocator, told to give large blocks back (Linux only; elsewhere nothing changes).

glibc serves a large allocation with its own memory map, returned on free, until a block that size is
freed: then it raises that *mmap threshold* (up to 32 MB) and later large blocks come from the heap,
where they fragment it and are not returned. Dedupe allocates and frees blocks of 0.5-32 MB batch after
batch (hash tables, sort orders, per-label arrays), so a long ingest's resident memory kept growing with
its input. Measured, canonicalise of 5M CSV rows on S3: peak 955-1,094 MB by default; with the threshold
fixed at 4 MB and the heap trimmed only past 128 MB free, 859-976 MB, at the same speed. (A threshold
of 128 kB holds 940 MB but costs 70 % more CPU in page faults; the trim threshold keeps the small
blocks' pages for reuse.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 128 << 20


def bound_heap_growth() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True when they were set."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
