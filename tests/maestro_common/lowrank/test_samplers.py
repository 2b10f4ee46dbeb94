from collections import Counter

import numpy as np
import pytest

from maestro_common.lowrank.samplers import (
    MaestroSampler,
    NoSampler,
    UniformSampler,
    make_sampler,
)

RANKS = {"a": 10, "b": 30, "c": 4}


def test_maestro_picks_layers_in_proportion_to_rank_and_ranks_uniformly():
    s = MaestroSampler(RANKS, seed=0)
    n = 20000
    layer_counts: Counter = Counter()
    b_ranks = []
    for _ in range(n):
        ranks = s.sample()
        changed = [name for name in RANKS if ranks[name] != RANKS[name]]
        assert len(changed) <= 1  # one layer at a reduced rank, all others at full rank
        # A draw of the full rank is invisible; only draws below it are counted.
        if changed:
            layer_counts[changed[0]] += 1
            if changed[0] == "b":
                b_ranks.append(ranks["b"])
    total = sum(RANKS.values())
    # P(layer) ∝ r, and P(b drawn at < r) = (r-1)/r.
    for name, r in RANKS.items():
        expected = n * r / total * (r - 1) / r
        assert abs(layer_counts[name] - expected) < 5 * np.sqrt(expected), (name, layer_counts)
    hist = np.bincount(b_ranks, minlength=31)[1:30]
    assert hist.min() > 0.6 * hist.mean()  # uniform over 1..29 (30 is indistinguishable)


def test_maestro_respects_the_budget_cap():
    s = MaestroSampler(RANKS, beta=0.25, seed=1)
    assert s.caps == {"a": 3, "b": 8, "c": 1}
    seen = {name: set() for name in RANKS}
    for _ in range(5000):
        for name, k in s.sample().items():
            assert 1 <= k <= s.caps[name]
            seen[name].add(k)
    assert seen["b"] == set(range(1, 9))


def test_uniform_applies_one_fraction_to_every_layer_within_budget():
    s = UniformSampler(RANKS, beta=0.5, seed=0, grid=(0.25, 0.5, 0.75, 1.0))
    draws = [s.sample() for _ in range(2000)]
    fractions = Counter(d["b"] for d in draws)
    assert set(fractions) == {8, 15}  # ⌈0.25·30⌉ and ⌈0.5·30⌉; 0.75 and 1.0 exceed β
    for d in draws:
        assert d["a"] == (3 if d["b"] == 8 else 5)
        assert all(d[n] <= s.caps[n] for n in RANKS)
    assert abs(fractions[8] - 1000) < 150


def test_uniform_below_the_grid_trains_at_the_budget():
    s = UniformSampler(RANKS, beta=0.1, seed=0, grid=(0.5, 1.0))
    assert s.sample() == {"a": 1, "b": 3, "c": 1}


def test_samplers_are_reproducible_by_seed():
    s1, s2, s3 = (MaestroSampler(RANKS, seed=x) for x in (7, 7, 8))
    seq1 = [s1.sample() for _ in range(50)]
    assert seq1 == [s2.sample() for _ in range(50)]
    assert seq1 != [s3.sample() for _ in range(50)]


def test_none_sampler_and_factory():
    assert NoSampler(RANKS, beta=0.5).sample() == {"a": 5, "b": 15, "c": 2}
    assert isinstance(make_sampler("uniform", RANKS), UniformSampler)
    with pytest.raises(ValueError, match="allowed: maestro, uniform, none"):
        make_sampler("fjord", RANKS)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MaestroSampler(RANKS, beta=1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        UniformSampler(RANKS, grid=(0.0, 0.5))


# ----- nested objective ------------------------------------------------------------------------
from maestro_common.lowrank.samplers import NestedSampler  # noqa: E402

FULL = {"a": 10, "b": 40}


def test_nested_sandwich_trains_prefix_smallest_and_one_in_between():
    s = NestedSampler(FULL, beta=1.0, grid=(0.25, 0.5, 0.75, 1.0), seed=0)
    seen = Counter()
    for _ in range(300):
        full, subs = s.plan()
        assert full
        assert subs[0] == 0.25 and len(subs) == 2 and subs[1] in (0.5, 0.75)
        seen[subs[1]] += 1
    assert seen[0.5] > 100 and seen[0.75] > 100


def test_nested_cuts_all_layers_together_within_the_prefix():
    s = NestedSampler(FULL, beta=0.5, grid=(0.25, 0.5, 1.0))
    assert s.caps == {"a": 5, "b": 20}
    assert s.ranks_at(0.25) == {"a": 3, "b": 10}
    assert s.ranks_at(1.0) == s.caps  # never beyond the prefix
    assert s.below == [0.25]  # 0.5 is the prefix itself, 1.0 lies above it
    assert s.plan() == (True, [0.25])


def test_nested_smallest_tier_trains_its_prefix_only():
    s = NestedSampler(FULL, beta=0.25, grid=(0.25, 0.5, 1.0))
    assert s.below == []
    assert s.plan() == (True, [])


def test_nested_rules_and_received_caps():
    assert NestedSampler(FULL, grid=(0.2, 0.6, 1.0), rule="smallest").plan() == (True, [0.2])
    assert NestedSampler(FULL, grid=(0.2, 0.6, 1.0), rule="none").plan() == (True, [])
    random = NestedSampler(FULL, grid=(0.2, 0.6, 1.0), rule="random", seed=1)
    assert {random.plan()[1][0] for _ in range(50)} == {0.2, 0.6}
    s = NestedSampler(FULL, beta=0.5, grid=(0.2, 0.5), caps={"a": 4, "b": 20})
    assert s.ranks_at(0.2) == {"a": 2, "b": 8}
    with pytest.raises(ValueError, match="caps name layers"):
        NestedSampler(FULL, caps={"a": 1})


def test_nested_full_pass_share_skips_the_prefix_on_some_steps():
    s = NestedSampler(FULL, grid=(0.25, 0.5, 1.0), full_pass_share=0.5, seed=3)
    fulls = [s.plan()[0] for _ in range(400)]
    assert 120 < sum(fulls) < 280
    never = NestedSampler(FULL, grid=(1.0,), full_pass_share=0.0)
    assert never.plan() == (True, [])  # nothing smaller to train: the prefix runs anyway


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "all"}, "unknown sub-model rule"),
        ({"full_pass_share": 1.5}, "full_pass_share"),
        ({"beta": 0.0}, "beta"),
        ({"grid": (0.0, 1.0)}, "grid values"),
    ],
)
def test_nested_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NestedSampler(FULL, **kwargs)


def test_alternate_runs_one_pass_a_step_the_prefix_every_other_step():
    s = NestedSampler({"a": 10, "b": 20}, beta=1.0, grid=(0.2, 0.5, 1.0), rule="alternate", seed=1)
    plans = [s.plan() for _ in range(40)]
    assert plans[0::2] == [(True, [])] * 20
    assert all(not full and len(subs) == 1 and subs[0] in (0.2, 0.5) for full, subs in plans[1::2])
    assert {subs[0] for _, subs in plans[1::2]} == {0.2, 0.5}
    # With nothing below the prefix, every step trains the prefix.
    low = NestedSampler({"a": 10}, beta=0.2, grid=(0.2, 1.0), rule="alternate")
    assert [low.plan() for _ in range(3)] == [(True, [])] * 3


@pytest.mark.parametrize(
    ("rule", "share"),
    [
        *(
            (r, s)
            for r in ("sandwich", "random", "smallest", "alternate", "none")
            for s in (1, 0.5)
        ),
        ("split", 1.0),  # split refuses full_pass_share < 1 (tested below)
    ],
)
def test_expected_plan_is_the_long_run_mean_of_plan(rule, share):
    s = NestedSampler(
        {"a": 10, "b": 20}, grid=(0.2, 0.4, 0.6, 1.0), rule=rule, full_pass_share=share, seed=3
    )
    full, subs = s.expected_plan()
    n = 4000
    runs, counts = 0, {}
    for _ in range(n):
        f, fractions = s.plan()
        runs += f
        for p in fractions:
            counts[p] = counts.get(p, 0) + 1
    assert runs / n == pytest.approx(full, abs=0.03)
    assert set(counts) == set(subs)
    for p, expected in subs.items():
        assert counts[p] / n == pytest.approx(expected, abs=0.03)


def test_sub_batch_share_cuts_the_sub_models_batch_and_their_priced_passes():
    s = NestedSampler({"a": 10}, grid=(0.5, 1.0), rule="smallest", sub_batch_share=0.25)
    assert [s.sub_batch(b) for b in (32, 10, 1)] == [8, 3, 1]
    assert [w for w, _ in s.pass_mix()] == [1.0, 0.25]
    with pytest.raises(ValueError, match="sub_batch_share must be in"):
        NestedSampler({"a": 10}, sub_batch_share=0.0)


def test_split_runs_the_sandwichs_passes_on_parts_of_the_batch_rotating_the_larger_parts():
    s = NestedSampler({"a": 10}, grid=(0.2, 0.4, 0.6, 1.0), rule="split", seed=0)
    full, subs = s.plan()
    assert full and subs[0] == 0.2 and subs[1] in (0.4, 0.6)
    assert [s.split_sizes(32, 3) for _ in range(3)] == [[11, 11, 10], [11, 10, 11], [10, 11, 11]]
    assert s.split_sizes(6, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="cannot split a batch of 2 between 3"):
        s.split_sizes(2, 3)
    # Per example of the batch: a third of a pass each (the middle ones share their third).
    assert [w for w, _ in s.pass_mix()] == pytest.approx([1 / 3, 1 / 3, 1 / 6, 1 / 6])
    # One tier below β: two passes on halves; none below: the prefix on the whole batch.
    assert [
        w for w, _ in NestedSampler({"a": 10}, beta=0.4, grid=(0.2, 0.4), rule="split").pass_mix()
    ] == [0.5, 0.5]
    assert [
        w for w, _ in NestedSampler({"a": 10}, beta=0.2, grid=(0.2, 1.0), rule="split").pass_mix()
    ] == [1.0]


@pytest.mark.parametrize("kwargs", [{"full_pass_share": 0.5}, {"sub_batch_share": 0.5}])
def test_split_refuses_the_settings_it_replaces(kwargs):
    with pytest.raises(ValueError, match="'split' shares each batch between its passes itself"):
        NestedSampler({"a": 10}, rule="split", **kwargs)
