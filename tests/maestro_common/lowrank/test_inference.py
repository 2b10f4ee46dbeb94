"""Tier sub-models and dense merging decided by (injected) timings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.inference import (
    Normalize,
    latency_ms,
    merge_where_faster,
    merge_where_smaller,
    tier_model,
)
from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers
from tests.small_nets import two_conv_net


def test_tier_model_is_the_budgets_sub_model():
    model = decompose(two_conv_net())
    x = torch.randn(3, 1, 6, 6)
    with use_budget(model, 0.3):
        expected = model(x)
    sub = tier_model(model, 0.3)
    assert torch.allclose(sub(x), expected, atol=1e-6)
    assert {n: m.rank for n, m in low_rank_layers(sub).items()} == {"2": 5, "5": 10}
    assert low_rank_layers(model)["2"].rank == 16  # the original is untouched


def test_merging_follows_the_timings_and_keeps_the_outputs():
    model = tier_model(decompose(two_conv_net()), 0.5)
    x = torch.randn(4, 1, 6, 6)
    before = model(x)

    def timer(module: nn.Module, inp: torch.Tensor) -> float:
        # Pretend dense wins for the conv only.
        is_conv = inp.ndim == 4
        return 1.0 if isinstance(module, LowRankLayer) else (0.5 if is_conv else 2.0)

    examples = []

    def plan_timer(fns):  # the whole model as the layers decided is fastest
        examples.append(len(fns))
        return [1.0] + [2.0] * (len(fns) - 1)

    decisions = merge_where_faster(
        model, (1, 6, 6), batch_sizes=(1, 8), timer=timer, plan_timer=plan_timer
    )
    assert examples == [3, 3]  # as decided, all merged, none merged; at batch 1 and 8
    assert [(d.layer, d.merged) for d in decisions] == [("2", True), ("5", False)]
    assert isinstance(model[2], nn.Conv2d) and isinstance(model[5], LowRankLayer)
    assert torch.allclose(model(x), before, atol=1e-5)
    assert decisions[0].to_json()["dense_ms"] == {"1": 0.5, "8": 0.5}


def test_whole_model_check_overrides_the_layer_timings():
    model = tier_model(decompose(two_conv_net()), 0.5)
    x = torch.randn(4, 1, 6, 6)
    before = model(x)
    decisions = merge_where_faster(
        model,
        (1, 6, 6),
        batch_sizes=(1,),
        timer=lambda module, inp: 1.0 if isinstance(module, LowRankLayer) else 0.5,
        plan_timer=lambda fns: [2.0, 1.0][: len(fns)],  # as decided (all merged) 2, none 1
    )
    assert [d.merged for d in decisions] == [False, False]
    assert isinstance(model[2], LowRankLayer) and isinstance(model[5], LowRankLayer)
    assert torch.allclose(model(x), before, atol=1e-6)


def test_normalize_and_latency():
    model = Normalize(nn.Identity(), [0.5], [0.25])
    assert torch.allclose(model(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))
    assert latency_ms(model, torch.zeros(1, 1, 2, 2), repeats=2) >= 0
    with pytest.raises(ValueError, match="repeats"):
        latency_ms(model, torch.zeros(1), repeats=0)


def test_tier_model_refuses_bad_budgets():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tier_model(decompose(two_conv_net()), 0)


def test_merging_by_size_merges_only_where_dense_is_smaller():
    model = decompose(two_conv_net())
    x = torch.randn(4, 1, 6, 6)
    full = tier_model(model, 1.0)  # full rank: r·(m + n) ≥ m·n, so dense is smaller
    before = full(x)
    decisions = merge_where_smaller(full)
    assert decisions and all(d.dense_params < d.factored_params for d in decisions)
    assert all(d.merged for d in decisions) and not low_rank_layers(full)
    assert torch.allclose(full(x), before, atol=1e-5)
    small = tier_model(model, 0.2)  # ranks 4 and 8: the factors are smaller than dense
    params = sum(p.numel() for p in small.parameters())
    decisions = merge_where_smaller(small)
    assert [d.merged for d in decisions] == [False, False]
    assert all(d.factored_params < d.dense_params for d in decisions)
    assert sum(p.numel() for p in small.parameters()) == params
    assert decisions[0].to_json()["layer"] == "2"
