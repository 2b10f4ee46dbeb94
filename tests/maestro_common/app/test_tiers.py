"""Tests for maestro_common.app.tiers: tier counts, seeded tier assignment and node budgets."""

import numpy as np
import pytest

from maestro_common.app.tiers import assign_tiers, resolve_budget, tier_counts, tier_of

TIERS = (0.25, 0.5, 1.0)
SHARES = (1 / 3, 1 / 3, 1 / 3)


@pytest.mark.parametrize(
    "n,shares,expected",
    [
        (10, [1, 1, 1], [4, 3, 3]),  # 3.33 each: the one left over goes to the first tier
        (100, [1] * 5, [20] * 5),
        (100, [0.2] * 5, [20] * 5),  # 0.2·100 is 20.000000000000004 in floats
        (10, [0, 1, 1], [0, 5, 5]),  # a zero share gets nobody
        (7, [1, 0, 2], [2, 0, 5]),  # 2.33, 0, 4.67: the larger remainder wins
        (5, [1, 1], [3, 2]),  # tie: the earlier tier
        (1, [1, 1, 1], [1, 0, 0]),
        (3, [5], [3]),
        (10, [0.7, 0.3], [7, 3]),
        (9, [1, 2, 6], [1, 2, 6]),
    ],
)
def test_tier_counts_hand_computed(n, shares, expected):
    assert tier_counts(n, shares) == expected


def test_tier_counts_always_sum_to_n_and_stay_within_one_of_exact():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 500))
        shares = rng.random(int(rng.integers(1, 8)))
        shares[rng.random(len(shares)) < 0.2] = 0.0
        if shares.sum() == 0:
            shares[0] = 1.0
        counts = tier_counts(n, shares.tolist())
        assert sum(counts) == n
        exact = shares / shares.sum() * n
        assert np.all(np.abs(np.array(counts) - exact) < 1.0)
        assert all(c == 0 for c, s in zip(counts, shares, strict=True) if s == 0)


@pytest.mark.parametrize(
    "n,shares", [(0, [1, 1]), (-3, [1]), (5, [0, 0]), (5, [1, -1, 1]), (5, [])]
)
def test_tier_counts_errors(n, shares):
    with pytest.raises(ValueError):
        tier_counts(n, shares)


@pytest.mark.parametrize("shares", [[float("nan"), 1.0], [float("inf"), 1.0]])
def test_tier_counts_rejects_non_finite_shares(shares):
    with pytest.raises(ValueError, match="shares"):
        tier_counts(10, shares)


@pytest.mark.parametrize("n,shares", [(10, [1, 1, 1]), (37, [0.5, 0.2, 0.3]), (100, [1] * 5)])
def test_assign_tiers_exact_counts(n, shares):
    tiers = assign_tiers(n, shares, seed=3)
    assert tiers.shape == (n,)
    assert np.bincount(tiers, minlength=len(shares)).tolist() == tier_counts(n, shares)


def test_assign_tiers_seeded():
    a = assign_tiers(100, [1, 1, 1, 1], seed=7)
    b = assign_tiers(100, [1, 1, 1, 1], seed=7)
    c = assign_tiers(100, [1, 1, 1, 1], seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a.tolist()) == sorted(c.tolist())  # same counts, other placement
    # Not left in sorted order: the placement is permuted.
    assert not np.array_equal(a, np.sort(a))


def test_tier_of_consistent_with_assign_tiers():
    n, shares, seed = 23, [2, 1, 1], 5
    full = assign_tiers(n, shares, seed)
    assert [tier_of(p, n, shares, seed) for p in range(n)] == full.tolist()


@pytest.mark.parametrize("pid", [-1, 10, 11])
def test_tier_of_rejects_out_of_range_partition(pid):
    with pytest.raises(ValueError, match="partition_id"):
        tier_of(pid, 10, [1, 1], 0)


@pytest.mark.parametrize(
    "node_config,expected",
    [
        ({"rank-fraction": 0.5}, (0.5, 1)),
        ({"rank-fraction": 0.3}, (0.3, None)),  # not one of the run's tiers
        ({"rank-fraction": 1}, (1.0, 2)),  # int from the CLI parser
        ({"tier": 0}, (0.25, 0)),
        ({"tier": 2}, (1.0, 2)),
        # rank-fraction wins over tier and over partition-id
        ({"rank-fraction": 0.25, "tier": 2, "partition-id": 0, "num-partitions": 3}, (0.25, 0)),
        ({"tier": 1, "partition-id": 0, "num-partitions": 3}, (0.5, 1)),
    ],
)
def test_resolve_budget_from_deployment_configs(node_config, expected):
    beta, tier = resolve_budget(node_config, TIERS, SHARES, seed=0)
    assert (beta, tier) == expected
    assert isinstance(beta, float)


def test_resolve_budget_from_partition_id_matches_tier_of():
    n, seed = 12, 4
    seen = set()
    for pid in range(n):
        beta, tier = resolve_budget({"partition-id": pid, "num-partitions": n}, TIERS, SHARES, seed)
        expected = tier_of(pid, n, SHARES, seed)
        assert tier == expected and beta == TIERS[expected]
        seen.add(tier)
    assert seen == {0, 1, 2}


@pytest.mark.parametrize(
    "node_config,match",
    [
        ({"rank-fraction": 0}, "rank-fraction"),
        ({"rank-fraction": 1.5}, "rank-fraction"),
        ({"rank-fraction": -0.5}, "rank-fraction"),
        ({"rank-fraction": True}, "rank-fraction"),
        ({"rank-fraction": "0.5"}, "rank-fraction"),
        ({"rank-fraction": float("nan")}, "rank-fraction"),
        ({"tier": -1}, "tier"),
        ({"tier": 3}, "tier"),
        ({"tier": True}, "tier"),
        ({"tier": 1.0}, "tier"),
        ({"tier": "1"}, "tier"),
        ({}, "node-config"),
        ({"partition-id": 0}, "node-config"),  # num-partitions missing
        ({"num-partitions": 4}, "node-config"),
        ({"partition-id": 4, "num-partitions": 4}, "partition_id"),
    ],
)
def test_resolve_budget_errors(node_config, match):
    with pytest.raises(ValueError, match=match):
        resolve_budget(node_config, TIERS, SHARES, seed=0)
