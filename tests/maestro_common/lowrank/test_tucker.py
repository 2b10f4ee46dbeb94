"""Nested Tucker-2 convolutions: exactness, nesting, wire format, aggregation, accounting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.app.codec import model_arrays, prefix_axes
from maestro_common.app.config import ConfigError
from maestro_common.app.task import load_run_config
from maestro_common.lowrank.accounting import (
    count_macs,
    count_macs_flop_counter,
    count_params,
)
from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose, to_dense
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.regularizers import group_lasso
from maestro_common.lowrank.shrinking import shrink
from maestro_common.lowrank.tucker import TuckerConv2d, hosvd_factors
from maestro_common.ml.models import build_model
from server.aggregation import aggregate_nested
from tests.received import assert_tier_round_trip, model_arrays_at_budget
from tests.small_nets import rel_err, tiny_conv_net


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "cin,cout,stride,padding,dilation",
    [(8, 8, 1, 1, 1), (4, 12, 2, 1, 1), (12, 4, 1, 2, 2), (3, 5, 1, 0, 1)],
)
def test_full_rank_matches_dense_conv(cin, cout, stride, padding, dilation):
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, dilation=dilation)
    layer = TuckerConv2d.from_dense(conv)
    assert layer.rank == max(cin, cout)
    x = torch.randn(2, cin, 11, 11)
    assert rel_err(layer(x), conv(x)) < 1e-5
    assert rel_err(layer.dense_weight(), conv.weight) < 1e-5


@pytest.mark.parametrize("k", [1, 3, 6, 10])
def test_rank_k_matches_dense_weight_and_truncation(k):
    layer = TuckerConv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    dense = F.conv2d(x, layer.dense_weight(k), layer.bias, 2, 1)
    assert rel_err(layer(x, rank=k), dense) < 1e-5
    cut = copy.deepcopy(layer)
    cut.truncate(k)
    assert cut.rank == k
    assert cut.core.shape == (k, k, 3, 3)
    torch.testing.assert_close(cut(x), layer(x, rank=k))


@pytest.mark.parametrize(
    ("make", "ks"),
    [
        (lambda: TuckerConv2d(6, 10, 3), (3, 7)),
        (lambda: BranchedTuckerConv2d(6, 10, 3, branches=2), (2, 4)),  # ranks per branch
    ],
)
def test_prefixes_nest_as_leading_blocks(make, ks):
    layer = make()
    small, big = copy.deepcopy(layer), copy.deepcopy(layer)
    small.truncate(ks[0])
    big.truncate(ks[1])
    for name, axes in layer.factor_axes().items():
        a, b = getattr(small, name), getattr(big, name)
        block = tuple(slice(0, a.shape[i]) if i in axes else slice(None) for i in range(b.ndim))
        assert torch.equal(b[block], a), name


def test_hosvd_truncation_keeps_the_energy_of_the_leading_channels():
    w = torch.randn(8, 8, 3, 3)
    errs = []
    for r in (2, 4, 8):
        u, core, v = hosvd_factors(w, r)
        approx = torch.einsum("or,rshw,si->oihw", u, core, v).float()
        errs.append(rel_err(approx, w))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-5


def test_rank_out_of_range_and_bad_groups_rejected():
    with pytest.raises(ValueError, match=r"rank must be in 1\.\.8"):
        TuckerConv2d(4, 8, 3, rank=9)
    with pytest.raises(ValueError, match="groups=1 only"):
        TuckerConv2d(4, 8, 3, groups=2)
    with pytest.raises(ValueError, match=r"needs nn\.Conv2d"):
        TuckerConv2d.from_dense(nn.Linear(3, 3))


SHAPE = (1, 8, 8)


def tucker_cnn() -> nn.Module:
    torch.manual_seed(0)
    return decompose(tiny_conv_net(), conv_factorization="tucker")


def test_decompose_tucker_only_factors_kxk_convs():
    model = decompose(
        build_model("resnet18", in_channels=3, image_size=16, width=0.125, norm="batch"),
        conv_factorization="tucker",
    )
    layers = low_rank_layers(model)
    assert any(isinstance(m, TuckerConv2d) for m in layers.values())
    for m in layers.values():
        if isinstance(m, TuckerConv2d):
            assert m.kernel_size == (3, 3)
        elif hasattr(m, "kernel_size"):
            assert m.kernel_size == (1, 1)  # shortcuts stay SVD-factored


def test_decompose_rejects_unknown_factorization():
    with pytest.raises(ValueError, match="conv_factorization must be one of"):
        decompose(build_model("cnn"), conv_factorization="cp")
    with pytest.raises(ConfigError, match="conv-factorization must be one of"):
        load_run_config({"conv-factorization": "cp"})


# Two branches of 4 channels cover min(in, out) of both convs only when the last has 4 outputs.
@pytest.mark.parametrize(("kind", "last"), [("tucker", 6), ("tucker-b2", 4)])
def test_factored_model_matches_dense_at_full_rank(kind, last):
    dense = tiny_conv_net(last)
    model = decompose(copy.deepcopy(dense), conv_factorization=kind)
    x = torch.randn(3, *SHAPE)
    assert rel_err(model(x), dense(x)) < 1e-4
    merged = to_dense(copy.deepcopy(model), beta=1.0)
    assert rel_err(merged(x), dense(x)) < 1e-4


@pytest.mark.parametrize("beta", [0.25, 0.5, 1.0])
def test_wire_prefix_roundtrip(beta):
    model = tucker_cnn()
    arrays = model_arrays_at_budget(model, beta)
    k = max(1, int(np.ceil(beta * 8 - 1e-9)))
    assert arrays["2.core"].shape == (k, k, 3, 3)
    assert arrays["2.v"].shape == (k, 4, 1, 1)
    assert arrays["2.u"].shape == (8, k)
    assert prefix_axes(model)["2.core"] == (0, 1)
    assert_tier_round_trip(model, tucker_cnn, beta, SHAPE)


def test_nested_aggregation_of_two_tucker_tiers():
    model = tucker_cnn()
    glob = model_arrays(model)
    small = {k: v + 1.0 for k, v in model_arrays_at_budget(model, 0.25).items()}
    full = {k: v + 3.0 for k, v in glob.items()}
    new = aggregate_nested(glob, [(small, 1.0), (full, 1.0)])
    core, old = new["2.core"], glob["2.core"]
    np.testing.assert_allclose(core[:2, :2], old[:2, :2] + 2.0, rtol=1e-6)
    np.testing.assert_allclose(core[2:, :], old[2:, :] + 3.0, rtol=1e-6)
    np.testing.assert_allclose(core[:2, 2:], old[:2, 2:] + 3.0, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["tucker", "tucker-b2", "tucker-b4"])
def test_macs_match_flop_counter_and_params(beta, kind):
    model = decompose(tiny_conv_net(), conv_factorization=kind)
    assert count_macs(model, SHAPE, beta) == count_macs_flop_counter(model, SHAPE, beta)
    resnet = decompose(
        build_model("resnet18", in_channels=3, image_size=16, width=0.125, norm="batch"),
        conv_factorization=kind,
    )
    assert count_macs(resnet, (3, 16, 16), beta) == count_macs_flop_counter(
        resnet, (3, 16, 16), beta
    )
    trained = copy.deepcopy(model)
    for name, layer in low_rank_layers(trained).items():
        with torch.no_grad(), use_budget(model, beta):
            k = low_rank_layers(model)[name]._resolve(None)
        layer.truncate(k)
    assert count_params(model, beta) == sum(p.numel() for p in trained.parameters())


def test_tucker_conv_at_quarter_budget_is_cheaper_than_svd():
    # The CNN's dominant conv (32→64, 5x5) at β = 0.25: Tucker cuts both channel modes.
    conv = nn.Conv2d(32, 64, 5, padding=2)
    svd = decompose(nn.Sequential(conv), skip=(), conv_factorization="svd")
    tucker = decompose(copy.deepcopy(nn.Sequential(conv)), skip=(), conv_factorization="tucker")
    svd_macs = count_macs(svd, (32, 14, 14), 0.25)
    tucker_macs = count_macs(tucker, (32, 14, 14), 0.25)
    assert tucker_macs < 0.7 * svd_macs


def test_lasso_and_shrinking_run_on_tucker_layers():
    model = tucker_cnn()
    assert group_lasso(model).item() > 0
    ranks = shrink(model, eps=1e9)
    assert ranks["2"] == 1
    assert model[2].core.shape == (1, 1, 3, 3)
