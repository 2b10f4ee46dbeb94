"""Tier profiles: validation, defaults, and parsing of per-tier comma strings."""

from __future__ import annotations

import itertools
import math

import pytest

from server.profiles import (
    DEFAULT_AVAILABILITY,
    DEFAULT_DOWN_BPS,
    DEFAULT_FRACTIONS,
    DEFAULT_SPEEDS,
    DEFAULT_UP_BPS,
    TierProfile,
    default_profile,
    profiles_from_strings,
)

GOOD = {"beta": 0.5, "speed": 1e9, "down_bps": 1e6, "up_bps": 1e6, "availability": 1}


def test_valid_profile_is_frozen():
    p = TierProfile(**GOOD)
    with pytest.raises(AttributeError):
        p.beta = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("beta", 0.0, "beta must be in (0, 1]"),
        ("beta", 1.5, "beta must be in (0, 1]"),
        ("speed", 0.0, "speed must be > 0"),
        ("down_bps", -5.0, "down_bps must be > 0"),
        ("up_bps", 0.0, "up_bps must be > 0"),
        ("availability", 0.0, "availability must be in (0, 1]"),
        ("availability", 1.01, "availability must be in (0, 1]"),
        ("speed", math.inf, "speed must be finite"),
        ("beta", math.nan, "beta must be finite"),
        ("speed", "fast", "speed must be a number"),
    ],
)
def test_invalid_profile_says_what_is_wrong(field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("]", r"\]")):
        TierProfile(**{**GOOD, field: value})


def test_defaults_are_the_documented_table():
    profiles = profiles_from_strings("", "", "", "", "")
    assert [p.beta for p in profiles] == list(DEFAULT_FRACTIONS)
    assert [p.speed for p in profiles] == pytest.approx(DEFAULT_SPEEDS)
    assert [p.down_bps for p in profiles] == pytest.approx(DEFAULT_DOWN_BPS)
    assert [p.up_bps for p in profiles] == pytest.approx(DEFAULT_UP_BPS)
    assert [p.availability for p in profiles] == pytest.approx(DEFAULT_AVAILABILITY)
    # Weakest to strongest: nothing gets slower as β grows.
    for a, b in itertools.pairwise(profiles):
        assert a.speed < b.speed and a.down_bps < b.down_bps and a.up_bps < b.up_bps


def test_default_profile_interpolates_by_beta():
    # 0.3 sits halfway (in log space) between 2e9 and 4e9 MAC/s.
    p = default_profile(0.3)
    assert p.speed == pytest.approx(2e9 * math.sqrt(2))
    assert p.availability == pytest.approx(0.825)
    # Clamped below the table.
    assert default_profile(0.1).speed == pytest.approx(2e9)


def test_single_value_applies_to_every_tier_and_lists_are_per_tier():
    profiles = profiles_from_strings("0.25,1", "1e9", "2e6,4e6", "1e6", "0.5,1")
    assert [p.beta for p in profiles] == [0.25, 1.0]
    assert [p.speed for p in profiles] == [1e9, 1e9]
    assert [p.down_bps for p in profiles] == [2e6, 4e6]
    assert [p.up_bps for p in profiles] == [1e6, 1e6]
    assert [p.availability for p in profiles] == [0.5, 1.0]


def test_empty_keys_take_each_tiers_default():
    profiles = profiles_from_strings("0.2,1", "", "", "", "")
    assert [p.speed for p in profiles] == pytest.approx([2e9, 32e9])
    assert [p.availability for p in profiles] == pytest.approx([0.8, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"speeds": "1e9,2e9,3e9,4e9"}, "tier-speeds"),
        ({"down": "1,2"}, "tier-down"),
        ({"up": "1,2,3,4,5,6"}, "tier-up"),
        ({"availability": "0.5,0.5"}, "tier-availability"),
    ],
)
def test_mismatched_length_names_key_and_count(kwargs, key):
    with pytest.raises(ValueError, match=f"{key} must have 3 values"):
        profiles_from_strings(fractions="0.2,0.5,1", **kwargs)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="tier-speeds must be comma-separated numbers"):
        profiles_from_strings(speeds="fast")
    with pytest.raises(ValueError, match="tier-fractions must all be in"):
        profiles_from_strings(fractions="0.5,2")
    with pytest.raises(ValueError, match="availability must be in"):
        profiles_from_strings(availability="0")
