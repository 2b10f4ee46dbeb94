"""Fixtures of the server tests that run NestedFedAvg over the fake grid (test_strategy*.py):
a tiny random IDX dataset, a lenet5 run config on it and its model operations. A test module
that defines a fixture of the same name uses its own."""

import pytest

from maestro_common.app.config import RunConfig
from server.model_ops import ModelOps
from tests.idx_data import write_random_idx
from tests.server.strategy_setup import NUM_TEST, NUM_TRAIN


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped IDX sample: random images, labels 0..9."""
    folder = tmp_path_factory.mktemp("idx")
    write_random_idx(folder, NUM_TRAIN, NUM_TEST)
    return str(folder)


@pytest.fixture(scope="module")
def cfg(data_dir):
    return RunConfig(
        model="lenet5",
        data_dir=data_dir,
        tier_fractions="0.25,0.5,1.0",
        batch_size=32,
        partitioning="iid",
        device="cpu",
        clients_per_round=4,
        max_test_examples=50,
    )


@pytest.fixture(scope="module")
def ops(cfg):
    return ModelOps(cfg)
