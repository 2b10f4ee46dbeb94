"""One source of hyper-parameter defaults, and the run config → training settings mapping."""

import pytest

from maestro_common.centralized import parse_args
from maestro_common.config import RunConfig
from maestro_common.task import train_settings
from maestro_common.training import TrainSettings


def test_train_settings_defaults_are_the_run_configs():
    assert TrainSettings() == train_settings(RunConfig())


def test_centralized_cli_defaults_are_the_run_configs():
    args, cfg = parse_args([]), RunConfig()
    assert (args.batch_size, args.lr, args.momentum) == (cfg.batch_size, cfg.lr, cfg.momentum)
    assert (args.weight_decay, args.max_grad_norm) == (cfg.weight_decay, cfg.max_grad_norm)
    assert (args.sampler, args.rank_fraction, args.shrink_eps) == (
        cfg.sampler,
        cfg.rank_fraction,
        cfg.shrink_eps,
    )


@pytest.mark.parametrize(("method", "lasso"), [("maestro", 0.01), ("fjord", 0.0)])
def test_run_config_maps_onto_train_settings(method, lasso):
    cfg = RunConfig(method=method, local_epochs=3, batch_size=8, lr=0.1, lasso=0.01)
    settings = train_settings(cfg)
    assert (settings.epochs, settings.batch_size, settings.lr) == (3, 8, 0.1)
    assert settings.lasso == lasso  # the group lasso acts on factored layers only
