"""Removed run-config keys: refused with the reason, tolerated at their old default on read."""

import pytest

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.removed import (
    REMOVED_KEYS,
    RemovedKey,
    removed_key_message,
    without_removed_defaults,
)


def test_the_message_names_the_key_the_reason_the_commit_and_the_verdicts_place():
    message = removed_key_message("hybrid-width")
    assert message.startswith("run-config key 'hybrid-width' was removed (its variant nested")
    assert "commit 59c7f3e" in message
    assert message.endswith('recorded in docs/results.md, "Variants measured": drop the key')


def test_a_key_removed_later_names_its_own_last_commit():
    message = removed_key_message("alternate-period")
    assert "commit 097aab9" in message and "k = 3 it trailed k = 2" in message


@pytest.mark.parametrize("stored", [False, "false", "False"])
def test_an_old_runs_removed_key_at_its_default_is_dropped(stored):
    old = {"method": "maestro", "seed": 1, "hybrid-width": stored}
    assert without_removed_defaults(old) == {"method": "maestro", "seed": 1}
    assert RunConfig.from_run_config(without_removed_defaults(old)) == RunConfig(seed=1)


@pytest.mark.parametrize("stored", [True, "true", 0, 1])
def test_a_removed_key_set_otherwise_stays_and_is_refused(stored):
    kept = without_removed_defaults({"hybrid-width": stored})
    assert kept == {"hybrid-width": stored}
    with pytest.raises(ConfigError, match="'hybrid-width' was removed"):
        RunConfig.from_run_config(kept)


def test_every_entry_has_a_reason_and_a_commit():
    for key, removed in REMOVED_KEYS.items():
        assert isinstance(removed, RemovedKey) and removed.reason and removed.commit, key
        assert without_removed_defaults({key: removed.default}) == {}
