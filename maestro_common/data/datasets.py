"""In-memory image datasets (Fashion-MNIST, CIFAR-10).

Both datasets are small enough (at most 60k images) to hold entirely in memory as
normalised float32 tensors, so there is no per-sample ``__getitem__`` and no
``torch.utils.data.DataLoader``: local training slices the tensors directly
(:func:`maestro_common.training.train`), which for in-memory data is one to two orders of
magnitude faster than a DataLoader (that one collates a Python list of per-sample tensors for
every batch).

Fashion-MNIST is read from the IDX files when they are available locally (no network
needed) and otherwise downloaded from the Hugging Face hub. CIFAR-10 is read from the standard
python archive ``cifar-10-python.tar.gz`` when one is found locally (``data_dir`` or
``$MAESTRO_DATA_DIR``), and otherwise comes from the hub (``uoft-cs/cifar10``), which needs
network access on first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maestro_common.data.cifar import find_cifar_archive, read_cifar_archive
from maestro_common.data.idx import read_idx

__all__ = [
    "DATASET_INFO",
    "DEFAULT_FASHION_MNIST_DIR",
    "ArrayDataset",
    "DatasetInfo",
    "DatasetUnavailableError",
    "hf_to_array_dataset",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
]

# Where the Debian/Ubuntu package dataset-fashion-mnist installs the IDX files.
_APT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_FASHION_MNIST_DIR = _APT_FASHION_MNIST_DIR
DATA_DIR_ENV = "MAESTRO_DATA_DIR"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
CIFAR10_HUB_ID = "uoft-cs/cifar10"

_SPLITS = ("train", "test")
# Standard IDX file names, as distributed by Zalando (the ".gz" variant is tried too).
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetUnavailableError(RuntimeError):
    """A dataset could be found neither locally nor on the Hugging Face hub."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that model builders need before loading it."""

    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        in_channels=1, image_size=28, num_classes=10, mean=(0.2860,), std=(0.3530,)
    ),
    "cifar10": DatasetInfo(
        in_channels=3,
        image_size=32,
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
}


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled image dataset held as two tensors.

    Attributes
    ----------
    images : torch.Tensor
        float32, shape (N, C, H, W), already normalised.
    labels : torch.Tensor
        int64, shape (N,).
    num_classes : int
        Number of classes of the full dataset (a subset keeps it even when some classes
        are absent, so model output sizes stay consistent across clients).
    name : str
        Human-readable name, e.g. ``"fashion-mnist/train"``.

    Notes
    -----
    Loaders cache datasets in-process, so several callers may share the same tensors;
    treat them as read-only (``subset`` and ``to`` return new tensors).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be 1-D int64, got shape {tuple(self.labels.shape)} "
                f"and dtype {self.labels.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """Return a new dataset with the samples at ``indices`` (copied), in that order."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64, device=self.labels.device)
        return ArrayDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            num_classes=self.num_classes,
            name=self.name,
        )

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Return the dataset on ``device`` (e.g. to keep a client's whole shard on GPU)."""
        return ArrayDataset(
            images=self.images.to(device),
            labels=self.labels.to(device),
            num_classes=self.num_classes,
            name=self.name,
        )


def _normalise(images_u8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 tensor scaled to [0, 1] then standardised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32).div_(255.0)
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    if m.shape[0] not in (1, c) or s.shape[0] not in (1, c):
        raise ValueError(f"mean/std need 1 or {c} entries, got {len(mean)} and {len(std)}")
    return x.sub_(m).div_(s)


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(_SPLITS)}")


# ---------------------------------------------------------------------------- Fashion-MNIST


def _candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    """Directories to search, most specific first; each base also gets common sub-layouts."""
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir))  # an explicit folder is the only place searched
    else:
        env = os.environ.get(DATA_DIR_ENV)
        if env:
            bases.append(Path(env))
        bases.append(DEFAULT_FASHION_MNIST_DIR)
    dirs: list[Path] = []
    for base in bases:
        # Also accept a shared data root holding several datasets, and torchvision's layout.
        for d in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find_idx_pair(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    images_name, labels_name = _FMNIST_FILES[split]
    for d in dirs:
        for suffix in (".gz", ""):
            images, labels = d / (images_name + suffix), d / (labels_name + suffix)
            if images.is_file() and labels.is_file():
                return images, labels
    return None


@functools.lru_cache(maxsize=8)
def _load_fashion_mnist_idx(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected (N, H, W) uint8 images, "
            f"got shape {images.shape} dtype {images.dtype}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    info = DATASET_INFO["fashion-mnist"]
    if len(labels) and not 0 <= labels.min() <= labels.max() < info.num_classes:
        raise ValueError(f"{labels_path}: labels outside 0..{info.num_classes - 1}")
    split = "train" if images_path.name.startswith("train") else "test"
    return ArrayDataset(
        images=_normalise(images[:, None], info.mean, info.std),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=info.num_classes,
        name=f"fashion-mnist/{split}",
    )


def _load_fashion_mnist_from_hub(split: str) -> ArrayDataset:
    """Download Fashion-MNIST from the Hugging Face hub (needs network on first use)."""
    return _load_from_hub(FASHION_MNIST_HUB_ID, split, "image", "fashion-mnist", None)


def load_fashion_mnist(split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """Load a Fashion-MNIST split, preferring local IDX files over the network.

    The standard IDX files (``train-images-idx3-ubyte[.gz]`` etc.) are searched for in
    ``data_dir`` only when it is given; otherwise in ``$MAESTRO_DATA_DIR``, then
    ``/usr/share/datasets/fashion-mnist`` (each directory also with the sub-folders
    ``fashion-mnist/`` and ``FashionMNIST/raw/``), and if none holds them the split is
    downloaded from the Hugging Face hub (``zalando-datasets/fashion_mnist``). Results are
    cached in-process, keyed by file path.

    Parameters
    ----------
    split : {"train", "test"}
        Which split to load (60000 or 10000 images).
    data_dir : str, Path or None
        Directory to search first.

    Returns
    -------
    ArrayDataset
        Images of shape (N, 1, 28, 28), normalised with mean 0.2860 and std 0.3530.

    Raises
    ------
    ValueError
        If ``split`` is unknown or a found IDX file is malformed.
    DatasetUnavailableError
        If ``data_dir`` is given and does not hold the files, or no local files exist and the
        hub download fails (e.g. offline); the message lists where it looked and how to get
        the data.

    Notes
    -----
    Offline, the hub client retries for about 25 s before giving up; set
    ``HF_HUB_OFFLINE=1`` to fail immediately.
    """
    _check_split(split)
    dirs = _candidate_dirs(data_dir)
    found = _find_idx_pair(split, dirs)
    if found is not None:
        return _load_fashion_mnist_idx(*found)
    if data_dir is not None:
        # An explicit folder is never silently replaced by another copy of the data.
        images_name, labels_name = _FMNIST_FILES[split]
        looked = "\n".join(f"  - {d}" for d in dirs)
        state = (
            "holds neither" if Path(data_dir).is_dir() else "does not exist, so it holds neither"
        )
        raise DatasetUnavailableError(
            f"Fashion-MNIST {split!r} split not found: data-dir {data_dir} {state} "
            f"{images_name}[.gz] nor {labels_name}[.gz]. Looked in:\n{looked}\n"
            "Point data-dir at the folder holding the four IDX files, or leave it empty to "
            f"search {DATA_DIR_ENV}, {DEFAULT_FASHION_MNIST_DIR} and the Hugging Face hub."
        )
    try:
        return _load_fashion_mnist_from_hub(split)
    except Exception as exc:
        images_name, labels_name = _FMNIST_FILES[split]
        looked = "\n".join(f"  - {d}" for d in dirs)
        raise DatasetUnavailableError(
            f"Fashion-MNIST {split!r} split not found.\n"
            f"Looked for {images_name}[.gz] and {labels_name}[.gz] in:\n{looked}\n"
            f"and the Hugging Face hub download ({FASHION_MNIST_HUB_ID}) failed: "
            f"{type(exc).__name__}: {exc}\n"
            "To get the data, do one of:\n"
            "  - apt-get install dataset-fashion-mnist  (installs the IDX files into "
            f"{_APT_FASHION_MNIST_DIR})\n"
            f"  - set {DATA_DIR_ENV} (or pass data_dir) to a folder holding the four IDX "
            "files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz\n"
            "  - run with network access so the hub download can succeed"
        ) from exc


# ---------------------------------------------------------------------------- Hugging Face


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
        images=_normalise(images, mean, std),
        labels=torch.from_numpy(np.asarray(batch[label_column]).astype(np.int64)),
        num_classes=num_classes,
        name=name,
    )


@functools.lru_cache(maxsize=8)
def _load_from_hub(
    hub_id: str, split: str, image_column: str, key: str, cache_dir: str | None
) -> ArrayDataset:
    # Imported lazily: `datasets` is slow to import and only needed for hub downloads.
    import datasets as hf_datasets

    hf = hf_datasets.load_dataset(hub_id, split=split, cache_dir=cache_dir)
    info = DATASET_INFO[key]
    return hf_to_array_dataset(
        hf, image_column, "label", info.mean, info.std, info.num_classes, f"{key}/{split}"
    )


@functools.lru_cache(maxsize=4)
def _load_cifar10_archive(path: Path, split: str) -> ArrayDataset:
    images, labels = read_cifar_archive(path, split)
    info = DATASET_INFO["cifar10"]
    return ArrayDataset(
        images=_normalise(images, info.mean, info.std),
        labels=torch.from_numpy(labels),
        num_classes=info.num_classes,
        name=f"cifar10/{split}",
    )


def load_cifar10(split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """Load a CIFAR-10 split: the local python archive if there is one, else the hub.

    ``cifar-10-python.tar.gz`` (the standard archive from the CIFAR-10 page) is searched for in
    ``data_dir`` and ``$MAESTRO_DATA_DIR`` (each also with a ``cifar10/`` sub-folder; a path to
    the archive itself works too) and read directly, without network or extraction. Otherwise
    the split comes from the Hugging Face hub (``uoft-cs/cifar10``), which needs network access
    the first time. Results are cached in-process.

    Parameters
    ----------
    split : {"train", "test"}
        Which split to load (50000 or 10000 images).
    data_dir : str, Path or None
        Folder holding the archive, else the Hugging Face cache directory; ``None`` uses the
        default (``$HF_DATASETS_CACHE``).

    Returns
    -------
    ArrayDataset
        Images of shape (N, 3, 32, 32), normalised with the CIFAR-10 channel statistics.

    Raises
    ------
    DatasetUnavailableError
        If the download fails (e.g. offline with an empty cache).
    """
    _check_split(split)
    archive = find_cifar_archive(data_dir)
    if archive is not None:
        return _load_cifar10_archive(archive, split)
    cache_dir = None if data_dir is None else str(data_dir)
    try:
        return _load_from_hub(CIFAR10_HUB_ID, split, "img", "cifar10", cache_dir)
    except Exception as exc:
        raise DatasetUnavailableError(
            f"CIFAR-10 {split!r} split could not be loaded from the Hugging Face hub "
            f"({CIFAR10_HUB_ID}, cache_dir={cache_dir}): {type(exc).__name__}: {exc}\n"
            "Without network, put the standard cifar-10-python.tar.gz in data-dir or "
            "$MAESTRO_DATA_DIR; the hub needs network access on first use, afterwards it is "
            "read from the Hugging Face cache (set HF_DATASETS_OFFLINE=1 to use only the cache)."
        ) from exc


_LOADERS = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}


def load_dataset(name: str, split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """Load a dataset split by name.

    Parameters
    ----------
    name : {"fashion-mnist", "cifar10"}
        Dataset name (the keys of ``DATASET_INFO``).
    split : {"train", "test"}
        Which split.
    data_dir : str, Path or None
        Passed to the dataset's loader (see :func:`load_fashion_mnist`,
        :func:`load_cifar10`).

    Returns
    -------
    ArrayDataset
        The loaded split.

    Raises
    ------
    ValueError
        If ``name`` or ``split`` is unknown.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(_LOADERS)}")
    return _LOADERS[name](split, data_dir)
