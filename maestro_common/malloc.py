"""glibc malloc tuning for torch on CPU, applied at run time with mallopt(3).

By default glibc maps every block above its (dynamic, at most 32 MB) mmap threshold afresh and
returns freed memory to the kernel, so an evaluation batch of 1000 images pays page faults on every
pass; keeping the memory measured 1.66-1.69x faster evaluation here (docs/results.md). The same
settings as the MALLOC_*_ environment variables the harness exports, for processes that Flower
starts without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}


def tune_malloc() -> bool:
    """Apply the settings; False (and nothing done) where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
