"""A client's local data: its partition of the training set, split into train and validation.

In simulation many clients share a process. A client reads only its own rows: partitions are
computed from the labels alone, and the images come from a memory-mapped uint8 cache of the
split (:mod:`maestro_common.ml.data.raw`), so a process holds its clients' rows, not the whole
training set. Without local files (hub download), the whole split is loaded as before.
"""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.ml.data import (
    DATASET_INFO,
    ArrayDataset,
    load_dataset,
    partition_indices,
    train_val_split,
)
from maestro_common.ml.data.local import load_local_dataset
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.partition_cache import cached_partitions
from maestro_common.ml.data.raw import local_raw_split, rows_dataset
from maestro_common.ml.data.text_sets import role_splits


def train_labels(dataset: str, data_dir: str) -> np.ndarray:
    """The training split's labels (from the memory-mapped cache when local files exist)."""
    raw = local_raw_split(dataset, "train", data_dir or None)
    if raw is not None:
        return raw.labels
    return load_dataset(dataset, "train", data_dir or None).labels.numpy()


@lru_cache(maxsize=4)
def _partitions(
    dataset: str,
    data_dir: str,
    num_partitions: int,
    scheme: str,
    alpha: float,
    k: int,
    seed: int,
    val_size: int = 0,
) -> tuple[np.ndarray, ...]:
    # Every client of a simulation shares one process per worker: partition once, reuse; and
    # every later process reads them from disk (the partitioners' import costs seconds).
    labels = train_labels(dataset, data_dir)
    settings = (num_partitions, scheme, alpha, k, seed, val_size)
    compute = partial(_compute_partitions, labels, *settings)
    return cached_partitions(labels, settings, compute, (Path(__file__),))


def _compute_partitions(
    labels: np.ndarray,
    num_partitions: int,
    scheme: str,
    alpha: float,
    k: int,
    seed: int,
    val_size: int,
) -> tuple[np.ndarray, ...]:
    if not val_size:
        return tuple(partition_indices(labels, num_partitions, scheme, alpha, k, seed))
    # The server's validation examples are in no partition: partition the rest, map back.
    try:
        kept, _ = holdout_split(len(labels), val_size, num_partitions)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    parts = partition_indices(labels[kept], num_partitions, scheme, alpha, k, seed)
    return tuple(kept[p] for p in parts)


def local_splits(
    cfg: RunConfig, partition_id: int, num_partitions: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """The (train, validation) data of partition ``partition_id`` of ``num_partitions``."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}")
    if DATASET_INFO[cfg.dataset].is_text:
        # The natural partition: a client is a role (or several), split in time.
        try:
            return role_splits(cfg.dataset, cfg.data_dir, partition_id, num_partitions)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    parts = _partitions(
        cfg.dataset,
        cfg.data_dir,
        num_partitions,
        cfg.partitioning,
        cfg.alpha,
        cfg.classes_per_partition,
        cfg.seed,
        cfg.val_size,
    )
    tr, va = train_val_split(parts[partition_id], cfg.val_fraction, seed=cfg.seed + partition_id)
    raw = local_raw_split(cfg.dataset, "train", cfg.data_dir or None)
    if raw is not None:
        return rows_dataset(raw, tr, cfg.dataset), rows_dataset(raw, va, cfg.dataset)
    train = load_dataset(cfg.dataset, "train", cfg.data_dir or None)
    return train.subset(torch.as_tensor(tr)), train.subset(torch.as_tensor(va))


@lru_cache(maxsize=2)
def own_splits(
    path: str, dataset: str, val_fraction: float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """The (train, validation) split of a device's own data at ``path`` (its ``data-path``).

    Only that data is read into memory, never a shared training set (see
    :mod:`maestro_common.ml.data.local` for the accepted forms). Cached: a long-running client
    process reads it once.
    """
    if DATASET_INFO[dataset].is_text:
        raise ConfigError(
            f"data-path holds image files; {dataset!r} nodes read their role from the corpus: "
            "give the SuperNode 'partition-id=<i> num-partitions=<n>' instead"
        )
    data = load_local_dataset(path, dataset, "train")
    tr, va = train_val_split(np.arange(len(data)), val_fraction, seed=seed)
    return data.subset(torch.as_tensor(tr)), data.subset(torch.as_tensor(va))
