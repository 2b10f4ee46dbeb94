"""Where each dataset comes from: Fashion-MNIST and CIFAR-10, local files first, then the hub.

Fashion-MNIST is read from the IDX files when they are available locally (no network
needed) and otherwise downloaded from the Hugging Face hub. CIFAR-10 is read from the standard
python archive ``cifar-10-python.tar.gz`` when one is found locally (``data_dir`` or
``$MAESTRO_DATA_DIR``), and otherwise comes from the hub (``uoft-cs/cifar10``), which needs
network access on first use. Either comes back as an in-memory
:class:`~maestro_common.ml.data.arrays.ArrayDataset`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset, normalise
from maestro_common.ml.data.cifar import find_cifar_archive, read_cifar_archive
from maestro_common.ml.data.hub import load_from_hub
from maestro_common.ml.data.idx import read_idx

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "DatasetUnavailableError",
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
        images=normalise(images[:, None], info.mean, info.std),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=info.num_classes,
        name=f"fashion-mnist/{split}",
    )


def _load_fashion_mnist_from_hub(split: str) -> ArrayDataset:
    """Download Fashion-MNIST from the Hugging Face hub (needs network on first use)."""
    return load_from_hub(FASHION_MNIST_HUB_ID, split, "image", "fashion-mnist", None)


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


@functools.lru_cache(maxsize=4)
def _load_cifar10_archive(path: Path, split: str) -> ArrayDataset:
    images, labels = read_cifar_archive(path, split)
    info = DATASET_INFO["cifar10"]
    return ArrayDataset(
        images=normalise(images, info.mean, info.std),
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
        return load_from_hub(CIFAR10_HUB_ID, split, "img", "cifar10", cache_dir)
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
