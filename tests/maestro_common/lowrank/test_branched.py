"""Nested branched Tucker-2 convolutions: exactness, nesting, wire, aggregation, accounting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.app.codec import load_arrays, model_arrays, prefix_axes
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model, check_names, load_run_config
from maestro_common.lowrank.accounting import count_macs
from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.decompose import branches_of, decompose
from maestro_common.lowrank.freezing import FreezeSchedule, freeze
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.regularizers import group_lasso
from maestro_common.lowrank.shrinking import shrink
from maestro_common.lowrank.tucker import TuckerConv2d
from server.aggregation import aggregate_nested
from tests.received import assert_tier_round_trip, model_arrays_at_budget
from tests.small_nets import rel_err, tiny_conv_net


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "cin,cout,stride,padding,dilation", [(4, 8, 1, 1, 1), (8, 4, 2, 1, 1), (6, 12, 1, 2, 2)]
)
def test_two_branches_at_full_rank_reproduce_the_dense_conv(cin, cout, stride, padding, dilation):
    # Per branch max(in, out) / 2 ≥ min(in, out) channels: the second branch takes the residual
    # of the first exactly.
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, dilation=dilation)
    layer = BranchedTuckerConv2d.from_dense(conv, branches=2)
    assert layer.rank == max(cin, cout) // 2 and layer.core.shape[0] == 2
    x = torch.randn(2, cin, 11, 11)
    assert rel_err(layer(x), conv(x)) < 1e-5
    assert rel_err(layer.dense_weight(), conv.weight) < 1e-5


def test_more_branches_approximate_better_at_a_larger_rank():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    errs = [
        rel_err(BranchedTuckerConv2d.from_dense(conv, r, branches=4).dense_weight(), conv.weight)
        for r in (1, 2)
    ]
    assert 1e-3 < errs[1] < errs[0] < 1


@pytest.mark.parametrize("k", [1, 2, 4])
def test_rank_k_is_a_grouped_core_matching_its_dense_weight_and_truncation(k):
    layer = BranchedTuckerConv2d(6, 8, 3, stride=2, padding=1, branches=2)
    x = torch.randn(2, 6, 9, 9)
    dense = F.conv2d(x, layer.dense_weight(k), layer.bias, 2, 1)
    assert rel_err(layer(x, rank=k), dense) < 1e-5
    cut = copy.deepcopy(layer)
    cut.truncate(k)
    assert cut.rank == k
    assert (
        cut.core.shape == (2, k, k, 3, 3) and cut.v.shape == (2, k, 6) and cut.u.shape == (8, 2, k)
    )
    torch.testing.assert_close(cut(x), layer(x, rank=k))


def test_bad_rank_branches_and_groups_are_rejected():
    with pytest.raises(ValueError, match=r"rank must be in 1\.\.4"):
        BranchedTuckerConv2d(4, 8, 3, rank=5, branches=2)
    with pytest.raises(ValueError, match="branches must be an int ≥ 1"):
        BranchedTuckerConv2d(4, 8, 3, branches=0)
    with pytest.raises(ValueError, match="groups=1 only"):
        BranchedTuckerConv2d(4, 8, 3, groups=2)
    with pytest.raises(NotImplementedError, match="load its state dict"):
        BranchedTuckerConv2d(4, 8, 3).load_factors(torch.zeros(8, 2), torch.zeros(4, 2))


SHAPE = (1, 8, 8)


def branched_cnn(kind: str = "tucker-b2") -> nn.Module:
    torch.manual_seed(0)
    return decompose(tiny_conv_net(), conv_factorization=kind)


@pytest.mark.parametrize("kind,branches", [("tucker-b2", 2), ("tucker-b4", 4)])
def test_decompose_makes_branched_kxk_convs(kind, branches):
    layers = low_rank_layers(branched_cnn(kind))
    assert branches_of(kind) == branches and branches_of("tucker") == 1
    assert {type(m) for m in layers.values()} == {BranchedTuckerConv2d}
    assert all(m.branches == branches and m.rank == 8 // branches for m in layers.values())
    assert not any(isinstance(m, TuckerConv2d) for m in layers.values())


@pytest.mark.parametrize("beta", [0.25, 0.5, 1.0])
def test_wire_prefix_roundtrip(beta):
    model = branched_cnn()
    arrays = model_arrays_at_budget(model, beta)
    k = max(1, int(np.ceil(beta * 4 - 1e-9)))
    assert arrays["2.core"].shape == (2, k, k, 3, 3)
    assert arrays["2.v"].shape == (2, k, 4)
    assert arrays["2.u"].shape == (8, 2, k)
    assert prefix_axes(model)["2.core"] == (1, 2)
    assert_tier_round_trip(model, branched_cnn, beta, SHAPE)


def test_a_received_u_of_the_wrong_rank_axis_is_refused():
    model = branched_cnn()
    arrays = model_arrays(model)
    arrays["2.u"] = arrays["2.u"][:, :, 0]  # 2-D: no rank axis where the layer has one
    with pytest.raises(
        ValueError, match=r"2\.u has shape \(8, 2\): its rank axis must hold 1\.\.4"
    ):
        load_arrays(branched_cnn(), arrays)


def test_nested_aggregation_of_two_branched_tiers():
    model = branched_cnn()
    glob = model_arrays(model)
    small = {k: v + 1.0 for k, v in model_arrays_at_budget(model, 0.25).items()}
    full = {k: v + 3.0 for k, v in glob.items()}
    new = aggregate_nested(glob, [(small, 1.0), (full, 1.0)])
    core, old = new["2.core"], glob["2.core"]
    np.testing.assert_allclose(core[:, :1, :1], old[:, :1, :1] + 2.0, rtol=1e-6)
    np.testing.assert_allclose(core[:, 1:], old[:, 1:] + 3.0, rtol=1e-6)
    np.testing.assert_allclose(core[:, :1, 1:], old[:, :1, 1:] + 3.0, rtol=1e-6)


def test_branched_core_costs_a_fraction_of_the_plain_core_at_the_same_width():
    # The CNN's dominant conv (32→64, 5x5): 2 branches of 16 against plain Tucker at 32.
    conv = nn.Sequential(nn.Conv2d(32, 64, 5, padding=2))
    plain = decompose(copy.deepcopy(conv), skip=(), conv_factorization="tucker")
    branched = decompose(copy.deepcopy(conv), skip=(), conv_factorization="tucker-b2")
    low_rank_layers(plain)["0"].truncate(32)
    low_rank_layers(branched)["0"].truncate(16)
    assert count_macs(branched, (32, 14, 14)) < 0.6 * count_macs(plain, (32, 14, 14))


def test_lasso_shrinking_and_freezing_act_on_every_branch():
    model = branched_cnn()
    assert group_lasso(model).item() > 0
    layer = model[2]
    layer.u.data[:, :, 2:] = 0  # the trailing components of every branch are dead
    layer.v.data[:, 2:] = 0
    assert shrink(model, eps=1e-9)["2"] == 2
    assert layer.core.shape == (2, 2, 2, 3, 3)
    schedule = FreezeSchedule("stage", groups=2, seed=0)
    period = next(p for p in range(2) if "2" in schedule.frozen(model, p))
    with freeze(model, schedule, period):
        frozen = [n for n in ("v", "core", "u") if not getattr(layer, n).requires_grad]
    assert frozen == ["v", "core", "u"]


def test_run_config_accepts_the_branched_factorization_and_builds_it():
    cfg = load_run_config({"conv-factorization": "tucker-b2", "model": "cnn"})
    check_names(cfg)
    model = build_run_model(RunConfig(model="cnn", conv_factorization="tucker-b2"))
    conv2 = [m for m in low_rank_layers(model).values() if isinstance(m, BranchedTuckerConv2d)]
    assert len(conv2) == 1 and conv2[0].rank == 32
