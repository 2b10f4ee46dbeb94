import platform
import sys

import pytest
import torch

from maestro_common.app.malloc import tune_malloc


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning applies to glibc only",
)
def test_tune_malloc_applies_on_glibc_and_memory_still_works():
    assert tune_malloc() is True
    x = torch.ones(4096, 4096)  # 64 MB: above glibc's default mmap threshold
    assert float(x.sum()) == 4096 * 4096
