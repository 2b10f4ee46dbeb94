"""Client partitions leave the server's validation examples out (run-config ``val-size``)."""

from __future__ import annotations

import numpy as np
import pytest

from client.local_data import _partitions, local_splits, train_labels
from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.ml.data import partition_indices
from maestro_common.ml.data.partition import holdout_split
from server.model_ops import ModelOps


def _parts(data: str, val_size: int, num: int = 8) -> tuple[np.ndarray, ...]:
    return _partitions("fashion-mnist", data, num, "dirichlet", 0.5, 2, 3, val_size)


def test_without_val_size_partitions_are_unchanged(fmnist_sample):
    labels = train_labels("fashion-mnist", str(fmnist_sample))
    today = partition_indices(labels, 8, "dirichlet", 0.5, 2, 3)
    for got, want in zip(_parts(str(fmnist_sample), 0), today, strict=True):
        assert np.array_equal(got, want)


def test_partitions_exclude_the_held_out_examples(fmnist_sample):
    n = len(train_labels("fashion-mnist", str(fmnist_sample)))
    kept, held = holdout_split(n, 300)
    parts = _parts(str(fmnist_sample), 300)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == n - 300  # disjoint, every kept example
    assert not np.isin(joined, held).any()
    assert np.array_equal(np.sort(joined), kept)
    # Another run seed draws other partitions from the same kept examples.
    other = _partitions("fashion-mnist", str(fmnist_sample), 8, "dirichlet", 0.5, 2, 4, 300)
    assert np.array_equal(np.sort(np.concatenate(other)), kept)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_the_server_validates_on_exactly_the_held_out_examples(fmnist_sample):
    cfg = RunConfig(model="lenet5", data_dir=str(fmnist_sample), val_size=300, device="cpu")
    labels = train_labels("fashion-mnist", str(fmnist_sample))
    _, held = holdout_split(len(labels), 300)
    val = ModelOps(cfg).val_set()
    assert len(val) == 300 and np.array_equal(val.labels.numpy(), labels[held])


def test_holdout_is_fixed_whatever_the_run():
    a_kept, a_held = holdout_split(1000, 100)
    b_kept, b_held = holdout_split(1000, 100, num_partitions=50)
    assert np.array_equal(a_held, b_held) and np.array_equal(a_kept, b_kept)
    assert len(a_held) == 100 and not np.isin(a_held, a_kept).any()
    assert np.array_equal(np.sort(np.concatenate([a_kept, a_held])), np.arange(1000))
    assert len(holdout_split(1000, 0)[1]) == 0


@pytest.mark.parametrize(
    ("size", "parts", "match"),
    [
        (1000, 1, r"val-size must be in 0\.\.999 \(the training set has 1000 examples\)"),
        (-1, 1, "val-size must be in"),
        (995, 10, "val-size=995 leaves 5 of 1000 training examples for 10 client partitions"),
    ],
)
def test_a_holdout_too_large_is_a_config_error(size, parts, match):
    with pytest.raises(ValueError, match=match):
        holdout_split(1000, size, parts)


def test_too_large_val_size_fails_on_client_and_server(fmnist_sample):
    cfg = RunConfig(model="lenet5", data_dir=str(fmnist_sample), val_size=2398, device="cpu")
    with pytest.raises(ConfigError, match="val-size=2398 leaves 2 of 2400 training examples"):
        local_splits(cfg, 0, 4)
    with pytest.raises(ConfigError, match=r"val-size must be in 0\.\.2399"):
        ModelOps(cfg.replace(val_size=2400)).val_set()
