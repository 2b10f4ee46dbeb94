"""Splitting a labelled dataset across federated clients.

The splitting itself is done by Flower Datasets partitioners, applied offline to a tiny
in-memory ``datasets.Dataset`` holding only the labels and the original sample indices,
so the (already loaded) image tensors are never copied and no download happens.

Before partitioning, the rows are put in a seeded random order. The partitioners take
samples in row order (``IidPartitioner`` cuts contiguous shards; the others split each
class's rows in order), so this permutation is what makes *which* samples a client gets
depend on ``seed``, and it makes the IID scheme random rather than "first N/K rows".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["HOLDOUT_SEED", "SCHEMES", "holdout_split", "partition_indices", "train_val_split"]

SCHEMES = ("iid", "dirichlet", "pathological")
# The server's validation examples are drawn with this seed, never the run's: every method and
# seed of an experiment then holds out (and is chosen on) the same examples.
HOLDOUT_SEED = 20_251_123


def _make_partitioner(
    scheme: str,
    num_partitions: int,
    alpha: float,
    classes_per_partition: int,
    min_partition_size: int,
    seed: int,
):
    # Imported lazily: flwr_datasets pulls in `datasets`, which is slow to import.
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if scheme == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if scheme == "dirichlet":
        # Per class, proportions across clients ~ Dir(alpha) (Hsu et al., 2019).
        # self_balancing=False keeps the textbook scheme: balancing stops giving data to
        # clients above the mean size, which silently flattens the skew alpha asks for.
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    # "deterministic": client p gets classes p, p+1, ..., p+k-1 (mod C). Unlike "random",
    # every class is used as soon as num_partitions >= C, and each class is shared by a
    # near-equal number of clients, so client sizes stay similar; the seed still decides
    # which samples of a class go to which client.
    return PathologicalPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_classes_per_partition=classes_per_partition,
        class_assignment_mode="deterministic",
        shuffle=True,
        seed=seed,
    )


def partition_indices(
    labels: np.ndarray | Sequence[int],
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    classes_per_partition: int = 2,
    seed: int = 0,
    min_partition_size: int = 1,
) -> list[np.ndarray]:
    """Split sample indices into ``num_partitions`` disjoint client partitions.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class label of every sample.
    num_partitions : int
        Number of clients, between 1 and N.
    scheme : {"iid", "dirichlet", "pathological"}
        - ``"iid"``: a seeded random permutation cut into near-equal shards.
        - ``"dirichlet"``: label skew; for every class, the share of each client is drawn
          from Dir(``alpha``). Smaller ``alpha`` means more skew. Client sizes vary.
        - ``"pathological"``: client ``p`` holds only the ``classes_per_partition``
          classes ``p, p+1, ...`` (mod number of classes); each class's samples are split
          evenly among the clients that hold it.
    alpha : float
        Dirichlet concentration (> 0); used by ``"dirichlet"`` only.
    classes_per_partition : int
        Classes per client; used by ``"pathological"`` only.
    seed : int
        The same seed gives the same partitions.
    min_partition_size : int
        ``"dirichlet"`` only: resample (up to 10 times, then ValueError) until every
        client has at least this many samples. The default 1 only forbids empty
        clients, which cannot train and break sample-weighted averaging, while leaving
        the skew of small ``alpha`` intact (flwr-datasets' default of 10 often needs
        several resamples at alpha ~ 0.1 and biases the draw).

    Returns
    -------
    list of np.ndarray
        ``num_partitions`` int64 arrays of indices into ``labels``, each in random order.
        They are disjoint and, for ``"iid"`` and ``"dirichlet"``, cover all samples.
        ``"pathological"`` leaves out classes no client is assigned, which can only
        happen when ``num_partitions * classes_per_partition`` < number of classes
        (a warning is then emitted by flwr-datasets).

    Raises
    ------
    ValueError
        On an unknown scheme or out-of-range argument.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = len(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    if not 1 <= num_partitions <= n:
        raise ValueError(
            f"num_partitions must be between 1 and the number of samples ({n}), "
            f"got {num_partitions}"
        )
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_partition_size < 0:
        raise ValueError(f"min_partition_size must be >= 0, got {min_partition_size}")
    num_classes = len(np.unique(labels))
    if scheme == "pathological" and not 1 <= classes_per_partition <= num_classes:
        raise ValueError(
            f"classes_per_partition must be between 1 and the number of classes present "
            f"({num_classes}), got {classes_per_partition}"
        )

    import datasets as hf_datasets

    perm = np.random.default_rng(seed).permutation(n)
    ds = hf_datasets.Dataset.from_dict({"label": labels[perm], "index": perm})
    partitioner = _make_partitioner(
        scheme, num_partitions, alpha, classes_per_partition, min_partition_size, seed
    )
    partitioner.dataset = ds.with_format("arrow")
    return [
        np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
        for i in range(num_partitions)
    ]


def train_val_split(
    indices: np.ndarray | Sequence[int], val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly split a client's indices into local train and validation parts.

    Parameters
    ----------
    indices : array-like of int
        The client's sample indices.
    val_fraction : float
        Fraction in [0, 1) that goes to validation, rounded to the nearest count. At
        least one sample always stays in train (so ``val_fraction`` > 0 on a one-sample
        client yields an empty validation set).
    seed : int
        The same seed gives the same split.

    Returns
    -------
    tuple of np.ndarray
        ``(train_indices, val_indices)``, disjoint int64 arrays covering ``indices``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    n_val = min(round(n * val_fraction), max(n - 1, 0))
    shuffled = indices[np.random.default_rng(seed).permutation(n)]
    return shuffled[n_val:], shuffled[:n_val]


def holdout_split(n: int, size: int, num_partitions: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held out): the server's validation set is held out.

    The held-out indices are the last ``size`` of a permutation drawn with
    :data:`HOLDOUT_SEED`, so they depend on ``n`` and ``size`` only.

    Parameters
    ----------
    n : int
        Examples in the training set.
    size : int
        Examples to hold out (run-config ``val-size``), in ``0 .. n - num_partitions``.
    num_partitions : int
        Client partitions the kept examples must fill (each needs at least one).

    Returns
    -------
    tuple of np.ndarray
        ``(kept, held)``: disjoint sorted int64 arrays covering ``range(n)``.

    Raises
    ------
    ValueError
        When ``size`` is negative, not below ``n``, or leaves fewer than ``num_partitions``.
    """
    if not 0 <= size < n:
        raise ValueError(
            f"val-size must be in 0..{n - 1} (the training set has {n} examples), got {size}"
        )
    if n - size < num_partitions:
        raise ValueError(
            f"val-size={size} leaves {n - size} of {n} training examples for {num_partitions} "
            f"client partitions (each needs at least one): lower val-size"
        )
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(perm[: n - size]), np.sort(perm[n - size :])
