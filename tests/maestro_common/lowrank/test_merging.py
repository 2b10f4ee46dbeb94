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
    monkeypatch.setattr(merging, "time_calls", lambda fns, *a, **k: [1.0, 0.0][: len(fns)])
    forced = copy.deepcopy(m)
    with use_budget(forced, beta):
        merging.merge_faster(forced, x, whole_model=False)
    assert not low_rank_layers(forced)
    with torch.no_grad():
        assert rel_err(forced(x), expected) <= 1e-5


def test_decision_follows_timings_and_is_measured_once(monkeypatch):
    calls = []

    def fake_time(fns, device, repeats=5, warmup=2):
        calls.append(fns)
        return [2.0, 1.0]  # factored 2 s, dense 1 s: merge

    monkeypatch.setattr(merging, "time_calls", fake_time)
    m = model("svd")
    x = torch.randn(2, 1, 6, 6)
    first = merging.merge_faster(copy.deepcopy(m), x, whole_model=False)
    assert all(first.values())
    n = len(calls)
    assert n == len(first)
    again = merging.merge_faster(copy.deepcopy(m), x, whole_model=False)
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


def _layer_plan(monkeypatch, merge: set[str]):
    """Layer timings that make exactly the layers of ``merge`` faster dense."""
    order = iter(low_rank_layers(model("svd")))

    def fake(fns, device, repeats=5, warmup=2):
        return [2.0, 1.0] if next(order) in merge else [1.0, 2.0]

    monkeypatch.setattr(merging, "time_calls", fake)


@pytest.mark.parametrize("winner", [0, 1, 2])
def test_whole_model_check_keeps_the_fastest_candidate(monkeypatch, winner):
    m = model("svd")
    names = list(low_rank_layers(m))
    plan = {names[0]: True, **dict.fromkeys(names[1:], False)}
    seen = []

    def timer(fns):
        seen.append(len(fns))
        return [0.5 if i == winner else 1.0 for i in range(len(fns))]

    x = torch.randn(3, 1, 6, 6)
    chosen = merging.fastest_plan(m, plan, [x, x], timer=timer)
    candidates = [plan, dict.fromkeys(names, True), dict.fromkeys(names, False)]
    assert chosen == candidates[winner]
    assert seen == [3, 3]  # every candidate, on every example
    # A candidate that is fastest on one example and slow on the other loses to the steady one.
    times = iter([[0.2, 1.0, 1.5], [10.0, 1.0, 1.0]])
    assert merging.fastest_plan(m, plan, [x, x], timer=lambda fns: next(times)) == candidates[1]


@pytest.mark.parametrize(("faster", "kept"), [(0.98, 1), (0.9, 2)])
def test_a_form_keeping_factors_must_beat_the_fully_merged_one_by_the_margin(faster, kept):
    """Fully merged runs the dense model's layers: 2 % faster is a blip, 10 % is kept."""
    m = model("svd")
    names = list(low_rank_layers(m))
    plan = {names[0]: True, **dict.fromkeys(names[1:], False)}
    x = torch.randn(3, 1, 6, 6)
    chosen = merging.fastest_plan(m, plan, [x, x], timer=lambda fns: [1.0, 1.0, faster])
    candidates = [plan, dict.fromkeys(names, True), dict.fromkeys(names, False)]
    assert chosen == candidates[kept]
    assert merging.MERGE_MARGIN == 0.03


def test_merge_faster_applies_the_whole_model_choice(monkeypatch):
    """Layer timings say merge the first layer; the whole model runs fastest unmerged."""
    m = model("svd")
    names = list(low_rank_layers(m))
    _layer_plan(monkeypatch, {names[0]})
    calls = []

    def fake_plan(unmerged, plan, examples, repeats=5, timer=None):
        calls.append(dict(plan))
        return dict.fromkeys(plan, False)

    monkeypatch.setattr(merging, "fastest_plan", fake_plan)
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        expected = m(x)
    decisions = merging.merge_faster(m, x)
    assert calls == [{names[0]: True, **dict.fromkeys(names[1:], False)}]
    assert decisions == dict.fromkeys(names, False)
    assert set(low_rank_layers(m)) == set(names)  # nothing merged
    with torch.no_grad():
        assert rel_err(m(x), expected) <= 1e-6


def test_fully_merged_candidate_is_the_dense_architecture():
    m = model("tucker")
    names = list(low_rank_layers(m))
    merged = merging.with_plan(m, dict.fromkeys(names, True))
    assert not low_rank_layers(merged)
    assert set(low_rank_layers(m)) == set(names)  # the source is left factored
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert rel_err(merged(x), m(x)) <= 1e-5


def test_time_calls_interleaves_and_takes_medians():
    order = []
    fns = [lambda: order.append("a"), lambda: order.append("b")]
    times = merging.time_calls(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert len(times) == 2 and all(t >= 0 for t in times)
