"""CIFAR-10 from the standard python archive (``cifar-10-python.tar.gz``), read without the hub.

The archive holds ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (train) and
``test_batch``: pickled dicts with ``data`` (N × 3072 uint8, channel-major 32×32 images) and
``labels``. Pickle can run arbitrary code, so the batches are read with an unpickler that only
admits what these files contain (numpy arrays, dicts, lists, strings and numbers), and members
are read straight from the archive (nothing is extracted, so no path in it is trusted).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# The only globals the CIFAR-10 pickles reference (numpy < 2 and numpy >= 2 module names).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1").
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: not something a CIFAR-10 batch contains"
            )
        return super().find_class(module, name)


def safe_load_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of one pickled batch."""
    try:
        batch = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{what}: not a CIFAR-10 batch ({err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{what}: expected a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{what}: lacks 'data' or 'labels' (keys: {sorted(batch)})")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{what}: data must be (N, 3072) uint8, got {images.shape} {images.dtype}")
    if len(labels) != len(images) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise ValueError(f"{what}: expected {len(images)} labels in 0..9")
    return images.reshape(-1, 3, 32, 32), labels


def find_cifar_archive(data_dir: str | Path | None) -> Path | None:
    """``cifar-10-python.tar.gz`` in ``data_dir`` or ``$MAESTRO_DATA_DIR`` (also in a ``cifar10/``
    sub-folder), or None."""
    bases = [Path(d) for d in (data_dir, os.environ.get("MAESTRO_DATA_DIR")) if d]
    for base in bases:
        for candidate in (base / ARCHIVE, base / "cifar10" / ARCHIVE, base):
            if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
                return candidate
    return None


def read_cifar_archive(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of the archive: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if split not in BATCHES:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(BATCHES)}")
    try:
        with tarfile.open(path, "r:gz") as tar:
            parts = []
            for batch in BATCHES[split]:
                member = f"{FOLDER}/{batch}"
                try:
                    fh = tar.extractfile(member)
                except KeyError:
                    fh = None
                if fh is None:
                    raise ValueError(f"{path}: no {member} in the archive")
                parts.append(safe_load_batch(fh.read(), f"{path}:{member}"))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable tar.gz archive ({err})") from err
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
