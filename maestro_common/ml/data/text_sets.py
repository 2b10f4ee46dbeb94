"""The character task's datasets as the federation uses them: a role per client, windows for
the server.

A client (partition ``i`` of ``P``) holds the roles ``i, i + P, i + 2P, …`` of the corpus's
sorted role list: one role each when the federation has as many nodes as the corpus has roles
(LEAF's natural partition), several when it has fewer. Its training windows come from its roles'
training segments, its local validation windows from their validation segments. The server
evaluates a fixed, seeded subsample of non-overlapping windows of every role's test (or
validation) segment. Nothing here reads anything but the parsed corpus
(:mod:`maestro_common.ml.data.shakespeare`).
"""

from __future__ import annotations

import sys

import torch

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset
from maestro_common.ml.data.shakespeare import eval_windows, load_shakespeare, windows

__all__ = ["TEXT_DATASETS", "client_roles", "role_splits", "server_split"]

TEXT_DATASETS = ("shakespeare",)
_SERVER_SPLITS = ("val", "test")


def _check(name: str) -> None:
    if name not in TEXT_DATASETS:
        raise ValueError(f"unknown character dataset {name!r}; allowed: {', '.join(TEXT_DATASETS)}")


def client_roles(num_roles: int, partition_id: int, num_partitions: int) -> list[int]:
    """The role indices of partition ``partition_id`` of ``num_partitions``.

    Raises
    ------
    ValueError
        When the partition id is out of range, or there are more partitions than roles (a
        partition would hold no data).
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}")
    if num_partitions > num_roles:
        raise ValueError(
            f"{num_partitions} partitions but the corpus has {num_roles} roles: each partition "
            f"needs at least one role, so run at most {num_roles} nodes"
        )
    return list(range(partition_id, num_roles, num_partitions))


def _dataset(parts: list[tuple[torch.Tensor, torch.Tensor]], name: str) -> ArrayDataset:
    info = DATASET_INFO[name.split("/")[0]]
    if parts:
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
    else:
        x = y = torch.zeros((0, info.context), dtype=torch.int64)
    return ArrayDataset(images=x, labels=y, num_classes=info.num_classes, name=name)


def role_splits(
    name: str, data_dir: str, partition_id: int, num_partitions: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, validation) windows of one client: every offset of its roles' segments.

    The parsed corpus is cached per process (:func:`load_shakespeare`); cutting a role's
    windows is a strided copy (about 10 ms for Hamlet's 40,000).
    """
    _check(name)
    corpus = load_shakespeare(data_dir or None)
    context = DATASET_INFO[name].context
    roles = client_roles(len(corpus.roles), partition_id, num_partitions)
    train, val = [], []
    for r in roles:
        if len(corpus.train[r]) > context:
            train.append(windows(corpus.train[r], context))
        if len(corpus.val[r]) > context:
            val.append(windows(corpus.val[r], context))
    return _dataset(train, f"{name}/train/{partition_id}"), _dataset(
        val, f"{name}/val/{partition_id}"
    )


def server_split(
    name: str, split: str, data_dir: str, max_windows: int, seed: int = 0
) -> ArrayDataset:
    """The server's evaluation windows of ``split`` ("val" or "test"): non-overlapping windows of
    every role's segment, a seeded subsample of ``max_windows`` of them (0 = all)."""
    _check(name)
    if split not in _SERVER_SPLITS:
        raise ValueError(
            f"the server evaluates the {', '.join(_SERVER_SPLITS)} splits of {name!r}, got "
            f"{split!r} (training windows are the clients')"
        )
    corpus = load_shakespeare(data_dir or None)
    x, y = eval_windows(corpus, split, max_windows or sys.maxsize, seed)
    return _dataset([(x, y)], f"{name}/{split}")
