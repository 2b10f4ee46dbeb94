"""Hugging Face hub datasets as in-memory :class:`ArrayDataset` tensors (the network fallback)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset, normalise

__all__ = ["hf_to_array_dataset", "load_from_hub"]


def hf_to_array_dataset(
    hf_dataset: Any,
    image_column: str,
    label_column: str,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    name: str,
) -> ArrayDataset:
    """Convert a Hugging Face ``datasets.Dataset`` of images into an :class:`ArrayDataset`.

    Parameters
    ----------
    hf_dataset : datasets.Dataset
        Dataset whose ``image_column`` holds equally sized images (PIL images or an
        ``Image`` feature; grayscale (H, W) or channels-last (H, W, C) uint8).
    image_column, label_column : str
        Column names, e.g. ``"img"`` and ``"label"`` for CIFAR-10.
    mean, std : sequence of float
        Per-channel statistics applied after scaling pixels to [0, 1]; one entry is
        broadcast to all channels.
    num_classes : int
        Number of classes of the full dataset.
    name : str
        Name for the result.

    Returns
    -------
    ArrayDataset
        Images as float32 (N, C, H, W), labels as int64 (N,).
    """
    for col in (image_column, label_column):
        if col not in hf_dataset.column_names:
            raise ValueError(f"column {col!r} not in dataset columns {hf_dataset.column_names}")
    # Numpy formatting decodes the whole image column into one stacked uint8 array in a
    # single call, much faster than converting PIL images one by one.
    batch = hf_dataset.select_columns([image_column, label_column]).with_format("numpy")[:]
    images = batch[image_column]
    if not isinstance(images, np.ndarray) or images.dtype == object:
        # Mixed sizes/modes come back as an object array; stacking then reports which.
        images = np.stack([np.asarray(im) for im in images])
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"expected (N, H, W) or (N, H, W, C) images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {images.dtype}")
    return ArrayDataset(
        images=normalise(images, mean, std),
        labels=torch.from_numpy(np.asarray(batch[label_column]).astype(np.int64)),
        num_classes=num_classes,
        name=name,
    )


@functools.lru_cache(maxsize=8)
def load_from_hub(
    hub_id: str, split: str, image_column: str, key: str, cache_dir: str | None
) -> ArrayDataset:
    # Imported lazily: `datasets` is slow to import and only needed for hub downloads.
    import datasets as hf_datasets

    hf = hf_datasets.load_dataset(hub_id, split=split, cache_dir=cache_dir)
    info = DATASET_INFO[key]
    return hf_to_array_dataset(
        hf, image_column, "label", info.mean, info.std, info.num_classes, f"{key}/{split}"
    )
