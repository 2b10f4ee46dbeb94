"""Tests for the in-memory dataset tensors and the dataset registry."""

import numpy as np
import pytest
import torch

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset


def test_dataset_info_registry():
    assert DATASET_INFO["fashion-mnist"].in_channels == 1
    assert DATASET_INFO["fashion-mnist"].image_size == 28
    assert DATASET_INFO["cifar10"].in_channels == 3
    assert DATASET_INFO["cifar10"].image_size == 32
    assert DATASET_INFO["cifar10"].input_shape == (3, 32, 32)
    images = [info for info in DATASET_INFO.values() if not info.is_text]
    assert all(info.num_classes == 10 for info in images)
    text = DATASET_INFO["shakespeare"]
    assert text.is_text and text.input_shape == (80,) and text.num_classes == 81
    assert set(DATASET_INFO) == {"fashion-mnist", "cifar10", "shakespeare"}


def test_token_windows_need_targets_shaped_like_their_inputs():
    x = torch.zeros((4, 8), dtype=torch.int64)
    ds = ArrayDataset(images=x, labels=x + 1, num_classes=81, name="t")
    assert len(ds) == 4 and ds.subset([1, 2]).labels.shape == (2, 8)
    with pytest.raises(ValueError, match="int64 targets shaped like their inputs"):
        ArrayDataset(images=x, labels=torch.zeros(4, dtype=torch.int64), num_classes=81, name="t")
    with pytest.raises(ValueError, match="token windows"):
        ArrayDataset(images=x.float(), labels=x, num_classes=81, name="t")


def _toy(n=10):
    return ArrayDataset(
        images=torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2),
        labels=torch.arange(n) % 3,
        num_classes=3,
        name="toy",
    )


def test_array_dataset_validation_and_subset():
    ds = _toy()
    assert len(ds) == 10
    sub = ds.subset(np.array([3, 1]))
    assert sub.labels.tolist() == [0, 1]
    torch.testing.assert_close(sub.images[0], ds.images[3])
    assert sub.num_classes == 3
    assert len(ds.subset([])) == 0
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(ds.images, ds.labels[:5], 3, "x")
    with pytest.raises(ValueError, match="float32"):
        ArrayDataset(ds.images.double(), ds.labels, 3, "x")
    with pytest.raises(ValueError, match="N, C, H, W"):
        ArrayDataset(ds.images[:, 0], ds.labels, 3, "x")
