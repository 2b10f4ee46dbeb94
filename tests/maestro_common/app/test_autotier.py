"""Automatic tier: measured step time and memory choose the largest fitting budget."""

from __future__ import annotations

import pytest

from maestro_common.app.autotier import auto_tier, benchmark_step, choose_tier, is_auto
from maestro_common.app.config import RunConfig
from maestro_common.app.device_report import MAX_CANDIDATES, StepMeasurement, decode_auto_tier

CFG = RunConfig(model="lenet5", tier_fractions="0.25,0.5,1.0", batch_size=16)


def device(ms_per_beta: float, mb_per_beta: float = 100.0):
    """A fake device whose step time and memory grow linearly with β."""
    return lambda cfg, beta: StepMeasurement(beta, ms_per_beta * beta, 300 + mb_per_beta * beta)


def test_a_slow_device_gets_a_smaller_tier():
    fast = choose_tier(CFG, max_step_ms=100, max_memory_mb=1e6, bench=device(50))
    slow = choose_tier(CFG, max_step_ms=100, max_memory_mb=1e6, bench=device(250))
    assert (fast.beta, fast.tier) == (1.0, 2)
    assert (slow.beta, slow.tier) == (0.25, 0)
    assert [m.beta for m in slow.measurements] == [0.25, 0.5, 1.0]


def test_memory_limits_the_choice_and_no_limit_on_time_is_allowed():
    choice = choose_tier(CFG, None, max_memory_mb=360, bench=device(1e6, mb_per_beta=100))
    assert choice.beta == 0.5 and choice.max_step_ms is None


def test_no_fitting_tier_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no tier of the run fits.*β=0.25: 250.0 ms"):
        choose_tier(CFG, max_step_ms=10, max_memory_mb=1e6, bench=device(1000))


def test_node_config_limits(monkeypatch):
    monkeypatch.setattr("maestro_common.app.autotier.benchmark_step", device(250))
    node = {"rank-fraction": "auto", "max-step-ms": 130, "max-memory-mb": 2000}
    assert is_auto(node) and auto_tier(node, CFG).beta == 0.5
    with pytest.raises(ValueError, match="max-step-ms must be a positive number"):
        auto_tier({"rank-fraction": "auto", "max-step-ms": "fast"}, CFG)


def test_the_report_round_trips_through_a_query_reply():
    choice = choose_tier(CFG, 130, 2000, bench=device(250))
    record = {"rank-fraction": choice.beta, "tier": choice.tier, **choice.to_record()}
    report = decode_auto_tier(record)
    assert report["beta"] == 0.5 and report["max-step-ms"] == 130
    assert report["cores"] >= 1 and report["memory-total-mb"] > 0
    assert [c["beta"] for c in report["candidates"]] == [0.25, 0.5, 1.0]
    assert report["candidates"][0] == {"beta": 0.25, "step-ms": 62.5, "memory-mb": 325.0}
    assert decode_auto_tier({"rank-fraction": 0.5, "tier": 1}) is None
    with pytest.raises(ValueError, match="malformed"):
        decode_auto_tier({**record, "auto-step-ms": [1.0]})


def test_a_report_listing_too_many_candidates_is_refused_unread():
    # issue 30: one query reply put 9.8 MB into the run's records through these lists.
    choice = choose_tier(CFG, 130, 2000, bench=device(250))
    record = {"rank-fraction": choice.beta, "tier": choice.tier, **choice.to_record()}
    n = MAX_CANDIDATES + 1
    for key in ("auto-betas", "auto-step-ms", "auto-memory-mb"):
        with pytest.raises(ValueError, match=f"{key} lists {n} candidates, at most"):
            decode_auto_tier({**record, key: [0.5] * n})


def test_the_real_benchmark_grows_with_the_budget():
    small, full = benchmark_step(CFG, 0.25, steps=1), benchmark_step(CFG, 1.0, steps=1)
    assert small.step_ms > 0 and full.step_ms > 0
    assert 0 < small.memory_mb < full.memory_mb  # more parameters and activations at β = 1
