"""glibc malloc tuning for torch on CPU, applied at run time with mallopt(3).

By default glibc maps every block above its (dynamic, at most 32 MB) mmap threshold afresh and
returns freed memory to the kernel, so an evaluation batch of 1000 images pays page faults on every
pass; keeping the memory measured 1.66-1.69x faster evaluation here (docs/results.md). The same
settings as the MALLOC_*_ environment variables the harness exports, for processes that Flower
starts without them. The server and simulated clients apply them by default; a deployed client
only when asked (:func:`client_wants_tuning`), since the top pad holds memory a small board needs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from typing import Any

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}
TUNE_MALLOC_ENV = "MAESTRO_TUNE_MALLOC"


def client_wants_tuning(
    node_config: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> bool:
    """Whether a ClientApp process tunes malloc: by default in simulation, opt-in on devices.

    The 256 MiB top pad keeps memory that a 1 GB board needs, so a deployed client leaves malloc
    alone unless its node config says ``tune-malloc=true`` or its environment
    ``MAESTRO_TUNE_MALLOC=1``; the node config decides first, and ``false`` / ``0`` turn it off
    in simulation too. Simulation is recognised by Ray being loaded (Flower's simulation engine
    runs ClientApps in Ray workers).
    """
    if "tune-malloc" in node_config:
        value = node_config["tune-malloc"]
        if not isinstance(value, bool):
            raise ValueError(f"node config tune-malloc must be true or false, got {value!r}")
        return value
    env = environ.get(TUNE_MALLOC_ENV, "")
    if env:
        if env not in ("0", "1"):
            raise ValueError(f"{TUNE_MALLOC_ENV} must be 0 or 1, got {env!r}")
        return env == "1"
    return "ray" in sys.modules


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
