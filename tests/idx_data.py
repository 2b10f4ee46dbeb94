"""A tiny random Fashion-MNIST-shaped IDX dataset for tests that need data files on disk."""

from pathlib import Path

import numpy as np

from maestro_common.ml.data import write_idx


def write_random_idx(folder: Path, train: int, test: int, seed: int = 0) -> Path:
    """Write ``train``/``test`` random 28x28 images with labels 0..9 as IDX files in ``folder``."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), "u1"))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype("u1"))
    return folder
