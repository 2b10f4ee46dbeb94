"""Partitions are computed once and read from disk by every later call (and process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maestro_common.ml.data import partition_cache
from maestro_common.ml.data.partition_cache import cached_partitions, partitions_key

LABELS = np.arange(40) % 4
PARTS = (np.array([3, 1, 7]), np.array([], dtype=np.int64), np.arange(10, 20))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MAESTRO_CACHE_DIR", str(folder))
    return folder


def _never() -> tuple[np.ndarray, ...]:
    raise AssertionError("computed although the partitions were stored")


def _same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.int64 and np.array_equal(g, w)


def test_the_second_call_reads_what_the_first_computed(cache: Path) -> None:
    _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)
    assert [p.name for p in cache.iterdir()] == [partitions_key(LABELS, (3, "iid"))]
    _same(cached_partitions(LABELS, (3, "iid"), _never), PARTS)  # an empty partition kept too


def test_other_settings_labels_or_code_compute_anew(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_partitions(LABELS, (3, "iid"), lambda: PARTS)
    calls = []

    def compute() -> tuple[np.ndarray, ...]:
        calls.append(1)
        return PARTS[:1]

    _same(cached_partitions(LABELS, (3, "dirichlet"), compute), PARTS[:1])
    _same(cached_partitions(LABELS[::-1], (3, "iid"), compute), PARTS[:1])
    _same(cached_partitions(LABELS.astype(np.int32), (3, "iid"), compute), PARTS[:1])
    monkeypatch.setattr(partition_cache, "_code_version", lambda sources: b"flwr-datasets 9.9")
    _same(cached_partitions(LABELS, (3, "iid"), compute), PARTS[:1])
    monkeypatch.undo()
    caller = tmp_path / "caller.py"
    caller.write_text("# the code that computes them\n")
    _same(cached_partitions(LABELS, (3, "iid"), compute, (caller,)), PARTS[:1])
    caller.write_text("# the code that computes them, changed\n")
    partition_cache._code_version.cache_clear()
    _same(cached_partitions(LABELS, (3, "iid"), compute, (caller,)), PARTS[:1])
    assert len(calls) == 6


def test_an_unreadable_file_is_computed_and_written_again(cache: Path) -> None:
    cache.mkdir()
    path = cache / partitions_key(LABELS, (3, "iid"))
    path.write_bytes(b"not an npy file")
    _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)
    _same(cached_partitions(LABELS, (3, "iid"), _never), PARTS)
    np.save(path, np.array([5, 1], dtype=np.int64))  # an array, but cut short
    _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)
    _same(cached_partitions(LABELS, (3, "iid"), _never), PARTS)
    np.save(path, np.ones((2, 3), dtype=np.int64))  # an int64 array of another shape
    _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)
    _same(cached_partitions(LABELS, (3, "iid"), _never), PARTS)


def test_an_error_of_the_computation_propagates_and_stores_nothing(cache: Path) -> None:
    def broken() -> tuple[np.ndarray, ...]:
        raise ValueError("num_partitions must be between 1 and 40")

    with pytest.raises(ValueError, match="num_partitions"):
        cached_partitions(LABELS, (99, "iid"), broken)
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_that_cannot_be_written_computes_in_memory(cache: Path) -> None:
    cache.mkdir(mode=0o500)
    try:
        _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)
        assert not any(cache.iterdir())
    finally:
        cache.chmod(0o700)


def test_a_cache_path_that_is_a_file_computes_in_memory(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(
        "MAESTRO_CACHE_DIR", str(blocker / "cache")
    )  # parent is a file, even for root
    _same(cached_partitions(LABELS, (3, "iid"), lambda: PARTS), PARTS)


def test_a_later_process_gets_its_partition_without_importing_flower_datasets(
    fmnist_sample: Path, cache: Path
) -> None:
    from client.local_data import _partitions

    args = ("fashion-mnist", str(fmnist_sample), 8, "dirichlet", 0.5, 2, 3, 300)
    here = _partitions.__wrapped__(*args)
    code = (
        "import sys; from client.local_data import _partitions; "
        f"parts = _partitions(*{args!r}); "
        "print('flwr_datasets' in sys.modules, 'datasets' in sys.modules, "
        "sum(len(p) for p in parts), int(parts[5][:10].sum()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
        cwd=Path(__file__).resolve().parents[4],
    ).stdout.split()
    assert out == [
        "False",
        "False",
        str(sum(len(p) for p in here)),
        str(int(here[5][:10].sum())),
    ]
