"""Merging by measurement: outputs unchanged, decisions follow the timings and are cached."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from maestro_common.lowrank import merging
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.layers import low_rank_layers
from tests.small_nets import rel_err, three_conv_net


@pytest.fixture(autouse=True)
def _fresh_cache():
    torch.manual_seed(0)
    merging.clear_cache()
    yield
    merging.clear_cache()


def model(kind: str) -> nn.Module:
    return three_conv_net(kind).eval()


@pytest.mark.parametrize("kind", ["svd", "tucker"])
@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_merged_and_unmerged_outputs_match(kind, beta, monkeypatch):
    m = model(kind)
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad(), use_budget(m, beta):
        expected = m(x)
        merged = copy.deepcopy(m)
        decisions = merging.merge_faster(merged, x, repeats=1)
    assert set(decisions) == set(low_rank_layers(m))
    with torch.no_grad():
        assert rel_err(merged(x), expected) <= 1e-5
    # Force every layer merged, too (the dense form timed faster): same function.
    merging.clear_cache()
    timings = iter([1.0, 0.0] * len(decisions))
    monkeypatch.setattr(merging, "time_call", lambda *a, **k: next(timings))
    forced = copy.deepcopy(m)
    with use_budget(forced, beta):
        merging.merge_faster(forced, x)
    assert not low_rank_layers(forced)
    with torch.no_grad():
        assert rel_err(forced(x), expected) <= 1e-5


def test_decision_follows_timings_and_is_measured_once(monkeypatch):
    calls = []

    def fake_time(fn, device, repeats=5, warmup=2):
        calls.append(fn)
        return 2.0 if len(calls) % 2 == 1 else 1.0  # factored 2 s, dense 1 s: merge

    monkeypatch.setattr(merging, "time_call", fake_time)
    m = model("svd")
    x = torch.randn(2, 1, 6, 6)
    first = merging.merge_faster(copy.deepcopy(m), x)
    assert all(first.values())
    n = len(calls)
    assert n == 2 * len(first)
    again = merging.merge_faster(copy.deepcopy(m), x)
    assert again == first
    assert len(calls) == n  # cached: no new timing


def test_layer_not_run_is_left_alone():
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model("svd")
            self.spare = copy.deepcopy(self.body[2])  # never called by forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    m = WithSpare()
    spare = m.spare
    decisions = merging.merge_faster(m, torch.randn(1, 1, 6, 6), repeats=1)
    assert decisions["spare"] is False
    assert m.spare is spare
