"""A device's own data from a path: Fashion-MNIST IDX files in a folder, or a ``.npz`` file.

This is what a SuperNode's ``data-path`` points at. Unlike :func:`load_dataset` nothing else is
searched: the path must hold the data, so a device never falls back to a training set it does not
own.

- A folder holds ``<split>-images-idx3-ubyte[.gz]`` and ``<split>-labels-idx1-ubyte[.gz]``, with
  ``<split>`` = ``train`` (or ``t10k`` for the test split), as Zalando distributes them.
- A ``.npz`` file holds ``images`` (uint8, (N, H, W), (N, H, W, C) or (N, C, H, W)) and
  ``labels`` (integers, (N,)), as ``numpy.savez(path, images=..., labels=...)`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset, normalise
from maestro_common.ml.data.idx import read_idx

__all__ = ["load_local_dataset"]

_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _idx_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _IDX_PREFIX[split]
    for suffix in (".gz", ""):
        images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.is_file() and labels.is_file():
            return read_idx(images), read_idx(labels)
    raise ValueError(
        f"{folder} holds no {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]"
    )


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"images", "labels"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{path} lacks {sorted(missing)}: an .npz needs arrays 'images' and 'labels' "
                    f"(it holds {sorted(data.files)})"
                )
            return data["images"], data["labels"]
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err


def load_local_dataset(path: str | Path, dataset: str, split: str = "train") -> ArrayDataset:
    """Load the images and labels at ``path`` as a normalised dataset.

    Parameters
    ----------
    path:
        A folder of IDX files or an ``.npz`` file (see the module docstring).
    dataset:
        The run's dataset (a key of ``DATASET_INFO``): image geometry and normalisation.
    split:
        ``train`` or ``test``: which IDX files a folder is read for (ignored for an ``.npz``).

    Raises
    ------
    ValueError
        When the path does not exist, holds no data in either form, or the images do not fit the
        dataset (size, channels, dtype, label range).
    """
    if dataset not in DATASET_INFO:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASET_INFO)}")
    if split not in _IDX_PREFIX:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(_IDX_PREFIX)}")
    path = Path(path).expanduser()
    if path.is_dir():
        images, labels = _idx_arrays(path, split)
    elif path.is_file() and path.suffix == ".npz":
        images, labels = _npz_arrays(path)
    else:
        raise ValueError(
            f"data path {path} is neither a folder of IDX files nor an existing .npz file"
        )
    info = DATASET_INFO[dataset]
    expected = (info.in_channels, info.image_size, info.image_size)
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif images.ndim == 4 and images.shape[1:] != expected:
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise ValueError(
            f"{path}: images must be uint8 of shape (N, {info.image_size}, {info.image_size}"
            f"{'' if info.in_channels == 1 else f', {info.in_channels}'}) for {dataset}, got "
            f"{images.dtype} {images.shape}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError(f"{path} holds no examples")
    if not 0 <= labels.min() <= labels.max() < info.num_classes:
        raise ValueError(f"{path}: labels must lie in 0..{info.num_classes - 1}")
    return ArrayDataset(
        images=normalise(images, info.mean, info.std),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=info.num_classes,
        name=f"{dataset}/{path.name}",
    )
