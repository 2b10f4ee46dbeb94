"""The virtual clock: hand-computed times, deadlines, budget fitting, availability."""

from __future__ import annotations

import pytest

from server.clock import (
    ClientTime,
    apply_deadline,
    client_time,
    fit_budget,
    is_available,
    round_duration,
    training_macs,
)
from server.profiles import TierProfile


def profile(beta=1.0, speed=1e9, down=1e6, up=5e5, availability=1.0) -> TierProfile:
    return TierProfile(beta=beta, speed=speed, down_bps=down, up_bps=up, availability=availability)


def test_training_macs_is_three_forward_passes():
    # 1,000 MACs forward × 50 examples × 2 epochs × 3 = 300,000
    assert training_macs(1_000, 50, 2) == 300_000
    assert training_macs(1_000, 0, 2) == 0
    with pytest.raises(ValueError, match="epochs must be ≥ 0"):
        training_macs(1_000, 50, -1)


def test_client_time_by_hand():
    # 3e9 MACs at 1e9 MAC/s = 3 s; 2e6 B at 1e6 B/s = 2 s; 1e6 B at 5e5 B/s = 2 s.
    t = client_time(3_000_000_000, 2_000_000, 1_000_000, profile())
    assert t == ClientTime(compute=3.0, download=2.0, upload=2.0)
    assert t.total == 7.0
    with pytest.raises(ValueError, match="work must be ≥ 0"):
        client_time(-1, 0, 0, profile())


TIMES = {
    "fast": ClientTime(1.0, 1.0, 1.0),  # 3 s
    "mid": ClientTime(3.0, 1.0, 1.0),  # 5 s
    "slow": ClientTime(8.0, 1.0, 1.0),  # 10 s
}


def test_deadline_drops_the_slowest():
    assert apply_deadline(TIMES, 6.0) == (["fast", "mid"], ["slow"])
    assert apply_deadline(TIMES, 5.0) == (["fast", "mid"], ["slow"])  # exactly on time: kept
    assert apply_deadline(TIMES, None) == (["fast", "mid", "slow"], [])
    assert apply_deadline(TIMES, 1.0) == ([], ["fast", "mid", "slow"])
    with pytest.raises(ValueError, match="deadline must be > 0"):
        apply_deadline(TIMES, 0.0)


def test_round_duration_is_slowest_kept():
    kept, _ = apply_deadline(TIMES, 6.0)
    assert round_duration(TIMES, kept) == 5.0
    assert round_duration(TIMES, list(TIMES)) == 10.0
    assert round_duration(TIMES, []) == 0.0


def cost_linear(budget: float) -> tuple[int, int, int]:
    # 10e9 MACs and 1e6 bytes each way at β = 1, all linear in β.
    return int(budget * 10e9), int(budget * 1e6), int(budget * 1e6)


def test_fit_budget_picks_the_largest_that_fits():
    grid = [0.2, 0.4, 0.6, 0.8, 1.0]
    # speed 1e9, down 1e6, up 1e6: time(β) = 10β + β + β = 12β s.
    p = profile(beta=1.0, speed=1e9, down=1e6, up=1e6)
    assert fit_budget(12.0, p, cost_linear, grid) == 1.0
    assert fit_budget(7.5, p, cost_linear, grid) == 0.6  # 12 × 0.6 = 7.2 ≤ 7.5 < 9.6
    assert fit_budget(2.0, p, cost_linear, grid) is None  # 12 × 0.2 = 2.4 > 2
    assert fit_budget(None, p, cost_linear, grid) == 1.0


def test_fit_budget_never_exceeds_the_tier_budget():
    p = profile(beta=0.4, speed=1e9, down=1e6, up=1e6)
    assert fit_budget(1e9, p, cost_linear, [1.0, 0.2, 0.8, 0.4]) == 0.4
    assert fit_budget(1e9, p, cost_linear, [0.6, 1.0]) is None


def test_is_available_is_reproducible_and_has_the_right_frequency():
    assert is_available(3, 5, 11, 0.7) == is_available(3, 5, 11, 0.7)
    assert all(is_available(0, r, 0, 1.0) for r in range(200))
    draws = [is_available(0, r, p, 0.7) for r in range(1, 101) for p in range(50)]
    assert sum(draws) / len(draws) == pytest.approx(0.7, abs=0.03)
    # Rounds and partitions are independent draws, not one value repeated.
    assert len({is_available(1, r, 0, 0.5) for r in range(1, 50)}) == 2
    with pytest.raises(ValueError, match="availability"):
        is_available(0, 1, 0, 1.5)
