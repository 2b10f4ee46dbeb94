"""CIFAR-10 read from a local python archive (written here), without the hub."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from maestro_common.ml.data import load_cifar10
from maestro_common.ml.data.cifar import read_cifar_archive, safe_load_batch
from maestro_common.ml.data.raw import local_raw_split, rows_dataset

PER_BATCH = 4


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"labels": [int(x) for x in rng.integers(0, 10, PER_BATCH)],
        b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * PER_BATCH,
    }


def write_archive(path, batches: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archive(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {n: pickle.dumps(_batch(i), protocol=2) for i, n in enumerate(names)}
    write_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    return tmp_path


def test_local_archive_is_read_without_the_hub(archive, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = load_cifar10("train", archive)
    test = load_cifar10("test", archive)
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and len(test) == PER_BATCH
    assert train.images.dtype == torch.float32
    first = _batch(0)
    assert train.labels[:PER_BATCH].tolist() == first[b"labels"]
    # Channel-major rows: pixel (c=1, y=0, x=0) is byte 1024 of the row, normalised.
    expected = (first[b"data"][0, 1024] / 255 - 0.4822) / 0.2435
    assert float(train.images[0, 1, 0, 0]) == pytest.approx(expected, abs=1e-5)


def test_clients_read_their_rows_of_the_archive_from_the_cache(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("MAESTRO_CACHE_DIR", str(tmp_path / "cache"))
    local_raw_split.cache_clear()
    raw = local_raw_split("cifar10", "train", str(archive))
    assert isinstance(raw.images, np.memmap) and raw.images.shape == (20, 3, 32, 32)
    rows = rows_dataset(raw, np.array([7, 2, 19]), "cifar10")
    full = load_cifar10("train", archive)
    assert torch.equal(rows.images, full.images[[7, 2, 19]])
    assert torch.equal(rows.labels, full.labels[[7, 2, 19]])
    local_raw_split.cache_clear()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_with_anything_but_arrays_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"refusing (posix|os)\.system"):
        safe_load_batch(pickle.dumps({b"data": _Evil(), b"labels": []}), "evil")
    names = [f"data_batch_{i}" for i in range(1, 6)]
    batches = {n: pickle.dumps(_batch(0), protocol=2) for n in names[:-1]}
    write_archive(tmp_path / "a.tar.gz", batches)
    with pytest.raises(ValueError, match="no cifar-10-batches-py/data_batch_5"):
        read_cifar_archive(tmp_path / "a.tar.gz", "train")
    bad = {**_batch(0), b"data": np.zeros((PER_BATCH, 10), np.uint8)}
    with pytest.raises(ValueError, match=r"\(N, 3072\) uint8"):
        safe_load_batch(pickle.dumps(bad), "bad")
