"""Shared fixtures: a small local Fashion-MNIST sample in IDX files (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maestro_common.data import read_idx, write_idx

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_fmnist_sample(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """The first images of the real Fashion-MNIST when installed, else random ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = SYSTEM_FMNIST / f"{split}-images-idx3-ubyte.gz"
        labels = SYSTEM_FMNIST / f"{split}-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            x, y = read_idx(images)[:n], read_idx(labels)[:n]
        else:
            x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture(scope="session")
def fmnist_sample(tmp_path_factory) -> Path:
    """A folder with 2,400 train and 400 test images in the four standard IDX files."""
    return write_fmnist_sample(tmp_path_factory.mktemp("fmnist"), 2400, 400)
