"""Tests for the dataset loaders; no network access (hub loaders are never called)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from maestro_common.ml.data import datasets as D
from maestro_common.ml.data.arrays import ArrayDataset
from maestro_common.ml.data.idx import write_idx

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def _fail_hub(*args, **kwargs):
    raise ConnectionError("network disabled in tests")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Never touch the hub, and hide the system-wide copy unless a test restores it."""
    monkeypatch.setattr(D, "_load_fashion_mnist_from_hub", _fail_hub)
    monkeypatch.setattr(D, "load_from_hub", _fail_hub)
    monkeypatch.setattr(D, "DEFAULT_FASHION_MNIST_DIR", tmp_path / "no-system-copy")
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)


def _write_sample(folder: Path, n: int = 20, gz: bool = True, seed: int = 0):
    """Write a tiny Fashion-MNIST-shaped sample (train and test) with the standard names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    data = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        data[split] = (images, labels)
    return data


def _check_fmnist(ds, images, labels):
    assert isinstance(ds, ArrayDataset)
    assert ds.images.shape == (len(images), 1, 28, 28)
    assert ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    assert ds.num_classes == 10
    torch.testing.assert_close(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    expected = (images[:, None].astype(np.float32) / 255.0 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(ds.images, torch.from_numpy(expected))


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_data_dir(tmp_path, gz):
    data = _write_sample(tmp_path / "fm", gz=gz)
    for split in ("train", "test"):
        ds = D.load_fashion_mnist(split, data_dir=tmp_path / "fm")
        _check_fmnist(ds, *data[split])
        assert ds.name == f"fashion-mnist/{split}"
    # str paths are accepted too, and the in-process cache returns the same object.
    assert D.load_fashion_mnist("train", str(tmp_path / "fm")) is D.load_fashion_mnist(
        "train", tmp_path / "fm"
    )


def test_load_fashion_mnist_from_env(tmp_path, monkeypatch):
    data = _write_sample(tmp_path / "envdir", n=12, seed=1)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "envdir"))
    _check_fmnist(D.load_fashion_mnist("test"), *data["test"])


def test_data_dir_takes_precedence_over_env(tmp_path, monkeypatch):
    _write_sample(tmp_path / "envdir", n=12, seed=1)
    data = _write_sample(tmp_path / "explicit", n=14, seed=2)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "envdir"))
    _check_fmnist(D.load_fashion_mnist("train", tmp_path / "explicit"), *data["train"])


def test_load_fashion_mnist_subfolder_layout(tmp_path):
    data = _write_sample(tmp_path / "root" / "fashion-mnist", n=10)
    _check_fmnist(D.load_fashion_mnist("train", tmp_path / "root"), *data["train"])


def test_load_dataset_dispatch(tmp_path):
    data = _write_sample(tmp_path / "fm", n=10)
    _check_fmnist(D.load_dataset("fashion-mnist", "test", tmp_path / "fm"), *data["test"])
    with pytest.raises(ValueError, match="fashion-mnist, cifar10"):
        D.load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="train, test"):
        D.load_dataset("fashion-mnist", "validation", tmp_path / "fm")


@pytest.mark.parametrize("exists", [False, True])
def test_explicit_data_dir_without_the_files_is_an_error_not_a_fallback(
    tmp_path, monkeypatch, exists
):
    _write_sample(tmp_path / "envdir", n=12, seed=1)  # a copy that must not be used instead
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "envdir"))
    given = tmp_path / "given"
    if exists:
        given.mkdir()
    with pytest.raises(D.DatasetUnavailableError) as info:
        D.load_fashion_mnist("train", data_dir=given)
    msg = str(info.value)
    assert str(given) in msg and "train-images-idx3-ubyte" in msg
    assert ("does not exist" in msg) is not exists
    assert str(tmp_path / "envdir") not in msg.split("Looked in:")[1].split("Point")[0]


def test_missing_data_error_message(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "envdir"))
    with pytest.raises(D.DatasetUnavailableError) as info:
        D.load_fashion_mnist("train")
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, ConnectionError)
    for expected in (
        str(tmp_path / "envdir"),
        str(tmp_path / "no-system-copy"),
        "train-images-idx3-ubyte",
        "apt-get install dataset-fashion-mnist",
        "MAESTRO_DATA_DIR",
        "zalando-datasets/fashion_mnist",
        "network",
    ):
        assert expected in msg, f"{expected!r} missing from error message:\n{msg}"


def test_cifar10_offline_error():
    with pytest.raises(D.DatasetUnavailableError, match="uoft-cs/cifar10"):
        D.load_cifar10("train")


def test_malformed_local_file_is_reported(tmp_path):
    _write_sample(tmp_path / "fm", n=10)
    write_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 10 labels"):
        D.load_fashion_mnist("train", tmp_path / "fm")


def test_real_fashion_mnist_test_split(monkeypatch):
    if not (REAL_FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {REAL_FMNIST}")
    monkeypatch.setattr(D, "DEFAULT_FASHION_MNIST_DIR", REAL_FMNIST)
    ds = D.load_fashion_mnist("test")
    assert len(ds) == 10000
    assert ds.images.shape == (10000, 1, 28, 28)
    counts = torch.bincount(ds.labels, minlength=10)
    assert len(counts) == 10
    assert counts.min() >= 900
    assert counts.max() <= 1100
    # The published statistics are for the train split; test is close to them.
    assert abs(ds.images.mean().item()) < 0.1
    assert abs(ds.images.std().item() - 1.0) < 0.1
