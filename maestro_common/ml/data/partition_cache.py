"""Client partitions stored on disk, so that only the first process computes them.

Computing a partition takes milliseconds; importing what computes it does not. The partitioners
come from Flower Datasets, whose import (Hugging Face ``datasets``, pyarrow and its plotting
helpers) took 13 s on a slow 2-core machine, in every new process. A deployed SuperNode runs each
message in a new process and every simulation starts new workers, so the partitions of one labels
array and one set of settings are written once, beside the decoded splits
(:func:`maestro_common.ml.data.raw.cache_dir`), and read by every later process.

The file name is a hash of the labels' bytes, the settings, the installed flwr-datasets version,
the source of :mod:`maestro_common.ml.data.partition` and that of the caller's modules that
compute the partitions (``sources``): a change to any of them computes the partitions anew. A
file that cannot be read is computed and written again; where the folder cannot be written, the
partitions are computed in memory, as without a cache. A warning that flwr-datasets prints
while partitioning appears only in the process that computed them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from maestro_common.ml.data import partition
from maestro_common.ml.data.raw import atomic_save, cache_dir


@lru_cache(maxsize=8)
def _code_version(sources: tuple[Path, ...] = ()) -> bytes:
    """What decides the partitions besides the inputs: flwr-datasets and the partition code."""
    try:
        flwr_datasets = metadata.version("flwr-datasets")
    except metadata.PackageNotFoundError:
        flwr_datasets = "absent"
    files = (Path(partition.__file__), *sources)
    return flwr_datasets.encode() + b"".join(hashlib.sha256(f.read_bytes()).digest() for f in files)


def partitions_key(
    labels: np.ndarray, settings: Sequence[object], sources: tuple[Path, ...] = ()
) -> str:
    """The cache file's name for ``labels`` partitioned with ``settings`` by ``sources``' code."""
    h = hashlib.sha256(_code_version(sources))
    labels = np.ascontiguousarray(labels)
    h.update(f"{labels.dtype.str}{labels.shape}".encode())
    h.update(labels.tobytes())
    h.update(repr(tuple(settings)).encode())
    return f"partitions-{h.hexdigest()[:24]}.npy"


def cached_partitions(
    labels: np.ndarray,
    settings: Sequence[object],
    compute: Callable[[], Sequence[np.ndarray]],
    sources: tuple[Path, ...] = (),
) -> tuple[np.ndarray, ...]:
    """The partitions ``compute()`` returns for ``labels`` and ``settings``, from disk if stored.

    ``settings`` must hold everything besides ``labels`` that ``compute`` depends on (their
    ``repr`` is hashed), and ``sources`` the files of the code in ``compute`` outside
    :mod:`maestro_common.ml.data.partition`. Errors of ``compute`` propagate, and nothing is
    stored then.
    """
    path = cache_dir() / partitions_key(labels, settings, sources)
    try:
        # One int64 array: the number of partitions, each one's end, then the indices.
        stored = np.load(path)
        if not isinstance(stored, np.ndarray) or stored.dtype != np.int64 or stored.ndim != 1:
            raise ValueError(f"{path}: not a stored partition")
        count = int(stored[0])  # an empty array: IndexError, handled below
        if count < 1 or len(stored) != 1 + count + stored[count]:
            raise ValueError(f"{path}: not a stored partition")
        return tuple(np.split(stored[1 + count :], stored[1:count]))
    except (OSError, ValueError, IndexError):
        pass  # not stored yet, or unreadable: compute and (re)write it
    parts = tuple(np.asarray(p, dtype=np.int64) for p in compute())
    ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
    with contextlib.suppress(OSError):  # an unwritable folder: computed in memory, as without
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, np.concatenate([[len(parts)], ends, *parts]).astype(np.int64))
    return parts
