"""Raw uint8 splits read from local files, decoded once into an on-disk cache and memory-mapped.

A simulated client needs a few hundred images of a 50,000-60,000-image training set. Loading the
whole set as float32 in every client process costs ~190 MB each (Fashion-MNIST), so memory grew
with the data rather than with the clients. Here a split is decoded once per machine into
``<cache>/<key>-images.npy`` (uint8) and then memory-mapped: a client reads the labels (60 KB),
computes its partition, and normalises only its own rows; the pages it never touches are never
read. The cache key covers the source files' paths, sizes and modification times, so a changed
source is decoded again. The cache folder is ``$MAESTRO_CACHE_DIR``, else
``~/.cache/maestro-fl``; where it cannot be written, the split is decoded in memory instead.

Sources: Fashion-MNIST IDX files (plain or .gz) and the standard CIFAR-10 python archive
``cifar-10-python.tar.gz`` (see :mod:`maestro_common.ml.data.cifar`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from maestro_common.ml.data import arrays, datasets
from maestro_common.ml.data.cifar import find_cifar_archive, read_cifar_archive
from maestro_common.ml.data.idx import read_idx

CACHE_ENV = "MAESTRO_CACHE_DIR"


@dataclass(frozen=True)
class RawSplit:
    """A split as uint8 images (N, C, H, W), possibly memory-mapped, and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    name: str


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "maestro-fl")


def _key(sources: Sequence[Path], split: str) -> str:
    h = hashlib.sha256(split.encode())
    for path in sources:
        st = path.stat()
        h.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def atomic_save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` through a temporary file, so no reader sees a partial file.

    OSError when it cannot be written (the temporary file removed where it can be).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)  # concurrent clients: the last writer wins with identical content
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _cached(
    sources: Sequence[Path], split: str, name: str, decode: Callable[[], tuple]
) -> RawSplit:
    folder = cache_dir()
    key = _key(sources, split)
    images_path, labels_path = folder / f"{key}-images.npy", folder / f"{key}-labels.npy"
    if not (images_path.exists() and labels_path.exists()):
        images, labels = decode()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_save(images_path, np.ascontiguousarray(images, dtype=np.uint8))
            atomic_save(labels_path, np.asarray(labels, dtype=np.int64))
        except OSError:
            return RawSplit(np.asarray(images, np.uint8), np.asarray(labels, np.int64), name)
    return RawSplit(np.load(images_path, mmap_mode="r"), np.load(labels_path), name)


def _decode_idx(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or len(labels) != len(images):
        raise ValueError(f"{images_path}: expected (N, H, W) images and N labels")
    return images[:, None], labels.astype(np.int64)


@lru_cache(maxsize=8)
def local_raw_split(name: str, split: str, data_dir: str | None) -> RawSplit | None:
    """The split from local files (cached, memory-mapped), or None when none are found.

    Cached per process: the memory map costs no resident memory until rows are read.
    """
    if name == "fashion-mnist":
        found = datasets._find_idx_pair(split, datasets._candidate_dirs(data_dir))
        if found is None:
            return None
        return _cached(found, split, f"{name}/{split}", lambda: _decode_idx(*found))
    if name == "cifar10":
        archive = find_cifar_archive(data_dir)
        if archive is None:
            return None
        return _cached(
            [archive], split, f"{name}/{split}", lambda: read_cifar_archive(archive, split)
        )
    raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(arrays.DATASET_INFO)}")


def read_rows(images: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows ``order`` of ``images``; from a memory map by positioned reads (``pread``), so the
    process maps none of the file (page faults on a map pull in neighbouring pages too)."""
    if not isinstance(images, np.memmap) or images.filename is None:
        return np.asarray(images[order])
    row = int(np.prod(images.shape[1:])) * images.itemsize
    out = np.empty((len(order), *images.shape[1:]), dtype=images.dtype)
    flat = out.reshape(len(order), -1).view(np.uint8)
    fd = os.open(images.filename, os.O_RDONLY)
    try:
        for i, idx in enumerate(order.tolist()):
            flat[i] = np.frombuffer(os.pread(fd, row, images.offset + idx * row), np.uint8)
    finally:
        os.close(fd)
    return out


def rows_dataset(raw: RawSplit, indices: np.ndarray, dataset: str) -> arrays.ArrayDataset:
    """The rows ``indices`` of ``raw`` as a normalised float32 dataset (only they are read)."""
    info = arrays.DATASET_INFO[dataset]
    order = np.asarray(indices, dtype=np.int64)
    images = read_rows(raw.images, order)
    return arrays.ArrayDataset(
        images=arrays.normalise(images, info.mean, info.std),
        labels=torch.from_numpy(raw.labels[order].copy()),
        num_classes=info.num_classes,
        name=raw.name,
    )
