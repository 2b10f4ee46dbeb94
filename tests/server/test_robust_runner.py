"""The sign-flip runner's character task is the experiment file's (always run; no training)."""

import tomllib

from maestro_common.app.config import RunConfig
from maestro_common.app.task import check_names
from tests.robust_experiment import SHAKESPEARE_CONF, shakespeare_changes


def test_the_character_task_takes_the_experiment_files_model_and_local_training():
    changes = shakespeare_changes(test_windows=123)
    with SHAKESPEARE_CONF.open("rb") as f:
        conf = tomllib.load(f)
    cfg = RunConfig(**changes)
    check_names(cfg)  # a model that fits the data, options the model knows
    assert (cfg.dataset, cfg.model, cfg.model_options) == (
        "shakespeare",
        conf["model"],
        conf["model-options"],
    )
    assert (cfg.local_steps, cfg.lr, cfg.optimizer) == (
        conf["local-steps"],
        conf["lr"],
        conf.get("optimizer", "sgd"),
    )
    assert cfg.max_test_examples == 123
