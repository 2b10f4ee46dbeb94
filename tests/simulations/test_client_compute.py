"""Reading a run's config for its compute column: older runs' removed keys at their defaults."""

from maestro_common.app.config import RunConfig
from simulations.client_compute import passes_per_step, run_config


def test_an_older_runs_config_with_a_removed_key_at_its_default_is_read():
    old = {**RunConfig(seed=2).to_run_config(), "hybrid-width": False}
    assert run_config(old) == RunConfig(seed=2)


def test_a_config_this_code_cannot_read_gives_none():
    assert run_config({"method": "maestro", "hybrid-width": True}) is None
    assert run_config({"no-such-key": 1}) is None


def test_an_older_runs_config_without_a_key_whose_default_changed_is_read_as_it_ran():
    # Before sub-models and transmission existed, Maestro ran the sandwich on prefixes; today's
    # default (auto) runs split with Collective transmission, a step of under one pass.
    old = run_config({"method": "maestro", "model": "lenet5"})
    assert (old.sub_model_rule, old.transmission_rule) == ("sandwich", "prefix")
    assert passes_per_step({"method": "maestro", "model": "lenet5"}, "1.0") > 1.5
    now = RunConfig(model="lenet5").to_run_config()
    assert run_config(now).sub_model_rule == "split"
    assert passes_per_step(now, "1.0") < 1
