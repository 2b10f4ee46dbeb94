"""Tests for converting Hugging Face datasets to in-memory tensors (no network)."""

import numpy as np
import pytest
import torch

from maestro_common.ml.data.arrays import DATASET_INFO
from maestro_common.ml.data.hub import hf_to_array_dataset


def _hf_dataset(n, size, mode):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    arrays = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]
    images = [Image.fromarray(a, mode=mode) for a in arrays]
    hf = datasets.Dataset.from_dict({"img": images, "label": [i % 10 for i in range(n)]})
    return hf, np.stack(arrays)


def test_hf_to_array_dataset_rgb():
    hf, arrays = _hf_dataset(6, 8, "RGB")
    mean, std = DATASET_INFO["cifar10"].mean, DATASET_INFO["cifar10"].std
    ds = hf_to_array_dataset(hf, "img", "label", mean, std, 10, "tiny")
    assert ds.images.shape == (6, 3, 8, 8)
    assert ds.images.dtype == torch.float32
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5]
    expected = (arrays.transpose(0, 3, 1, 2) / 255.0 - np.reshape(mean, (3, 1, 1))) / np.reshape(
        std, (3, 1, 1)
    )
    torch.testing.assert_close(ds.images, torch.from_numpy(expected.astype(np.float32)))
    assert ds.name == "tiny"


def test_hf_to_array_dataset_grayscale_and_bad_column():
    hf, arrays = _hf_dataset(4, 5, "L")
    ds = hf_to_array_dataset(hf, "img", "label", (0.5,), (0.5,), 10, "g")
    assert ds.images.shape == (4, 1, 5, 5)
    torch.testing.assert_close(
        ds.images, torch.from_numpy((arrays[:, None] / 255.0 - 0.5) / 0.5).float()
    )
    with pytest.raises(ValueError, match="image"):
        hf_to_array_dataset(hf, "image", "label", (0.5,), (0.5,), 10, "g")
