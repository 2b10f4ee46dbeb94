"""Tests for the run-config keys' metadata: bounds, help, method groups and the key listing."""

import re
from pathlib import Path

import pytest

from maestro_common.app.config import (
    MAESTRO,
    ConfigError,
    OneOf,
    Range,
    RunConfig,
    describe_keys,
    key_fields,
    keys_by_method,
)
from maestro_common.app.keys import key_listing
from maestro_common.app.methods import METHOD_NAMES, get_method
from maestro_common.app.task import load_run_config, registries

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
KEYS = {f.name.replace("_", "-"): f for f in key_fields()}


def test_every_key_has_help_and_a_known_group():
    assert list(KEYS) == RunConfig.keys()
    for key, f in KEYS.items():
        assert f.metadata["doc"].strip(), f"{key} has no help text"
        assert f.metadata["method"] in (None, MAESTRO), key
        if f.metadata["needs"]:  # a refused key belongs to the group of the methods it needs
            assert f.metadata["method"] == MAESTRO and f.metadata["unused"], key


def test_keys_by_method_partitions_the_keys_in_order():
    groups = keys_by_method()
    assert sorted(k for keys in groups.values() for k in keys) == sorted(KEYS)
    assert {"lasso", "shrink-every", "dense-warmup", "objective"} <= set(groups[MAESTRO])
    assert {"lr", "num-rounds", "method", "aggregation"} <= set(groups[None])


def test_range_and_one_of_describe_what_they_allow():
    assert Range(low=1).describe() == "≥ 1"
    assert Range(low=0, low_open=True).describe() == "> 0"
    assert Range(low=0, high=1, low_open=True).describe() == "in (0, 1]"
    half = Range(low=0, high=0.5, high_open=True, note="(a share)")
    assert half.describe() == "in [0, 0.5) (a share)"
    assert half.allows(0.0) and half.allows(0.49) and not half.allows(0.5)
    assert not half.allows(-0.01)
    assert half.error("x", 0.5) == "x must be in [0, 0.5) (a share), got 0.5"
    assert half.error("x", 0.2) is None
    names = OneOf(("", "a"))
    assert names.error("k", "b") == "k must be one of \"\", a, got 'b'"
    assert names.error("k", "") is None


def _outside(bound: Range) -> float:
    """A value just outside ``bound``: below its low end, or else above its high end."""
    if bound.low is not None:
        return bound.low if bound.low_open else bound.low - 1
    assert bound.high is not None
    return bound.high if bound.high_open else bound.high + 1


@pytest.mark.parametrize(
    "key", [k for k, f in KEYS.items() if isinstance(f.metadata["allowed"], Range)]
)
def test_each_bound_on_a_field_is_enforced_naming_key_and_interval(key):
    f = KEYS[key]
    bound = f.metadata["allowed"]
    bad = type(f.default)(_outside(bound))
    message = f"{key} must be {bound.describe()}, got {bad}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.from_run_config({key: bad})
    assert RunConfig.from_run_config({key: f.default}) == RunConfig()


@pytest.mark.parametrize(
    "key", [k for k, f in KEYS.items() if isinstance(f.metadata["allowed"], OneOf)]
)
def test_each_choice_on_a_field_is_enforced(key):
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be one of ")):
        RunConfig.from_run_config({key: "no-such-choice"})
    for choice in KEYS[key].metadata["allowed"].choices:
        assert getattr(RunConfig.from_run_config({key: choice}), key.replace("-", "_")) == choice


# A value off the default for each key that only some methods act on.
_OFF_DEFAULT = {
    "lasso": 1e-3,
    "shrink-every": 10,
    "dense-warmup": 0.5,
    "transmission": "collective",
}


def test_the_refused_keys_are_the_ones_with_a_method_flag():
    assert {k for k, f in KEYS.items() if f.metadata["needs"]} == set(_OFF_DEFAULT)


@pytest.mark.parametrize("key", sorted(_OFF_DEFAULT))
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_method_only_key_is_refused_by_the_methods_without_its_flag(key, method):
    changes = {key: _OFF_DEFAULT[key], "method": method, "num-rounds": 4}
    if getattr(get_method(method), KEYS[key].metadata["needs"]):
        assert load_run_config(changes).method == method
        return
    with pytest.raises(ConfigError, match=rf"^{key} applies to .* only .*{method!r}.*leave {key}"):
        load_run_config(changes)


def test_registry_keys_are_keys():
    assert set(registries()) <= set(KEYS)


def test_pyproject_lists_the_keys_exactly_as_the_listing():
    """[tool.flwr.app.config] is the listing: defaults, help, allowed values, method groups."""
    text = PYPROJECT.read_text()
    start = text.index("[tool.flwr.app.config]\n") + len("[tool.flwr.app.config]\n")
    table = text[start : text.index("\n[", start)].strip() + "\n"
    assert table == key_listing(), (
        "pyproject.toml's [tool.flwr.app.config] is out of date: paste the output of "
        "`python -m maestro_common.app.keys` there"
    )


def test_the_listing_groups_method_only_keys_under_their_method():
    lines = key_listing().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(f"# {MAESTRO} only"))
    after = {line.split(" = ")[0] for line in lines[header + 1 :] if " = " in line}
    assert after == set(keys_by_method()[MAESTRO])
    assert "lasso, shrink-every, transmission and dense-warmup" in lines[header]
    # Without registries, the listing still shows every key with its field's bounds.
    plain = describe_keys()
    assert "num-rounds = 3" in plain and "must be ≥ 1" in plain
    assert 'method = "maestro"' in plain and "must be one of maestro" not in plain
