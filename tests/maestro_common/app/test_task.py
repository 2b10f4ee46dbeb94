"""Tests for the run's task: its model, its input shape and device, and its training settings."""

import numpy as np
import pytest
import torch

from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model, input_shape, resolve_device, train_settings
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.training import TrainSettings
from maestro_common.ml.models import build_model
from simulations.centralized import parse_args


def test_train_settings_defaults_are_the_run_configs():
    assert TrainSettings() == train_settings(RunConfig())


def test_centralized_cli_defaults_are_the_run_configs():
    # The centralized trainer reads the run config itself: every key at its default (num-rounds
    # is its epochs) but transmission, fixed at prefix since it sends nothing.
    cfg = parse_args([]).first
    assert cfg == RunConfig(num_rounds=cfg.num_rounds, transmission="prefix")
    assert train_settings(cfg) == TrainSettings()


@pytest.mark.parametrize(("method", "lasso"), [("maestro", 0.01), ("fjord", 0.0)])
def test_run_config_maps_onto_train_settings(method, lasso):
    cfg = RunConfig(method=method, local_epochs=3, batch_size=8, lr=0.1, lasso=0.01)
    settings = train_settings(cfg)
    assert (settings.epochs, settings.batch_size, settings.lr) == (3, 8, 0.1)
    assert settings.lasso == lasso  # the group lasso acts on factored layers only


def test_build_run_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = model_arrays(build_run_model(RunConfig(model="lenet5", seed=1)))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = model_arrays(build_run_model(RunConfig(model="lenet5", seed=1)))
    c = model_arrays(build_run_model(RunConfig(model="lenet5", seed=2)))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.u"], c["fc1.u"])


def test_build_run_model_factored_or_dense():
    maestro = build_run_model(RunConfig(model="lenet5", rank_fraction=0.5))
    assert {n: m.rank for n, m in low_rank_layers(maestro).items()} == {
        "conv2": 8,
        "fc1": 60,
        "fc2": 42,
    }
    dense = build_run_model(RunConfig(model="lenet5", method="fedavg-all"))
    assert low_rank_layers(dense) == {}
    plain = build_model("lenet5", 10, 1, 28)
    assert set(model_arrays(dense)) == set(model_arrays(plain))


def test_decomposed_model_at_full_rank_matches_dense():
    torch.manual_seed(0)
    dense = build_model("lenet5", 10, 1, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = dense(x)
        got = decompose(dense).eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_input_shape_and_resolve_device():
    assert input_shape(RunConfig()) == (1, 28, 28)
    assert input_shape(RunConfig(dataset="cifar10")) == (3, 32, 32)
    assert resolve_device(RunConfig(device="cpu")) == torch.device("cpu")
    auto = resolve_device(RunConfig(device="auto"))
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device(RunConfig(device="cuda"))
