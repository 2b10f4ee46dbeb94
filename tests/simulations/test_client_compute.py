"""Reading a run's config for its compute column: older runs' removed keys at their defaults."""

from maestro_common.app.config import RunConfig
from simulations.client_compute import run_config


def test_an_older_runs_config_with_a_removed_key_at_its_default_is_read():
    old = {**RunConfig(seed=2).to_run_config(), "hybrid-width": False}
    assert run_config(old) == RunConfig(seed=2)


def test_a_config_this_code_cannot_read_gives_none():
    assert run_config({"method": "maestro", "hybrid-width": True}) is None
    assert run_config({"no-such-key": 1}) is None
