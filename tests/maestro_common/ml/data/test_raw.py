"""Clients read only their rows: the memory-mapped raw split gives the same data as before."""

from __future__ import annotations

import numpy as np
import torch

from client.local_data import local_splits
from maestro_common.app.config import RunConfig
from maestro_common.ml.data import load_dataset, partition_indices, train_val_split
from maestro_common.ml.data.raw import local_raw_split


def test_local_splits_equal_slicing_the_whole_training_set(fmnist_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("MAESTRO_CACHE_DIR", str(tmp_path / "cache"))
    local_raw_split.cache_clear()
    cfg = RunConfig(data_dir=str(fmnist_sample), partitioning="dirichlet", alpha=0.5, seed=3)
    full = load_dataset("fashion-mnist", "train", str(fmnist_sample))
    parts = partition_indices(full.labels.numpy(), 10, "dirichlet", 0.5, 2, 3)
    for pid in (0, 7):
        tr, va = local_splits(cfg, pid, 10)
        tr_idx, va_idx = train_val_split(parts[pid], cfg.val_fraction, seed=cfg.seed + pid)
        old_tr, old_va = full.subset(torch.as_tensor(tr_idx)), full.subset(torch.as_tensor(va_idx))
        assert torch.equal(tr.images, old_tr.images) and torch.equal(tr.labels, old_tr.labels)
        assert torch.equal(va.images, old_va.images) and torch.equal(va.labels, old_va.labels)
    raw = local_raw_split("fashion-mnist", "train", str(fmnist_sample))
    assert isinstance(raw.images, np.memmap)  # decoded once into the cache, then mapped
    assert len(list((tmp_path / "cache").glob("*-images.npy"))) == 1
    local_raw_split.cache_clear()
