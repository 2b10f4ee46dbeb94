import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.layers import (
    LowRankConv2d,
    LowRankLinear,
    budget_rank,
    budget_ranks,
    low_rank_layers,
    use_ranks,
)
from maestro_common.lowrank.tucker import TuckerConv2d
from tests.small_nets import rel_err


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_linear_matches_dense_weight_at_every_rank(rank):
    layer = LowRankLinear(7, 5)
    x = torch.randn(4, 7)
    dense = F.linear(x, layer.dense_weight(rank), layer.bias)
    assert rel_err(layer(x, rank=rank), dense) < 1e-5
    assert layer.dense_weight(rank).shape == (5, 7)
    assert torch.linalg.matrix_rank(layer.dense_weight(rank).detach(), rtol=1e-4) == rank


@pytest.mark.parametrize("rank", [1, 4, 12])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_conv_matches_dense_weight_at_every_rank(rank, stride, padding, dilation):
    layer = LowRankConv2d(3, 12, 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 11, 11)
    dense = F.conv2d(x, layer.dense_weight(rank), layer.bias, stride, padding, dilation)
    out = layer(x, rank=rank)
    assert out.shape == dense.shape
    assert rel_err(out, dense) < 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_svd_init_is_exact_for_linear(bias):
    dense = nn.Linear(9, 6, bias=bias)
    layer = LowRankLinear.from_dense(dense)
    assert layer.rank == layer.max_rank == 6
    x = torch.randn(5, 9)
    assert rel_err(layer(x), dense(x)) < 1e-5
    assert rel_err(layer.dense_weight(), dense.weight) < 1e-5


def test_svd_init_is_exact_for_conv_and_splits_singular_values_evenly():
    dense = nn.Conv2d(4, 6, (3, 2), stride=2, padding=1)
    layer = LowRankConv2d.from_dense(dense)
    x = torch.randn(2, 4, 9, 9)
    assert rel_err(layer(x), dense(x)) < 1e-5
    s = torch.linalg.svdvals(dense.weight.detach().reshape(6, -1))
    # U = P√S and V = Q√S: both factors' column norms equal √σ.
    assert torch.allclose(layer.u_matrix().norm(dim=0), s.sqrt(), atol=1e-5)
    assert torch.allclose(layer.v_matrix().norm(dim=0), s.sqrt(), atol=1e-5)


def test_truncated_svd_init_is_the_best_rank_k_approximation():
    dense = nn.Linear(10, 8)
    layer = LowRankLinear.from_dense(dense, rank=3)
    w = dense.weight.detach()
    p, s, qh = torch.linalg.svd(w)
    best = p[:, :3] @ torch.diag(s[:3]) @ qh[:3]
    assert rel_err(layer.dense_weight(), best) < 1e-5


def test_full_rank_of_conv_is_min_of_out_and_fan_in():
    assert LowRankConv2d(2, 32, 3).max_rank == 18
    assert LowRankConv2d(16, 8, 3).max_rank == 8


def test_truncate_drops_components_physically_and_keeps_prefix_output():
    layer = LowRankConv2d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 6, 6)
    before = layer(x, rank=4)
    layer.truncate(4)
    assert layer.rank == 4
    assert layer.v.shape == (4, 3, 3, 3) and layer.u.shape == (8, 4)
    assert torch.allclose(layer(x), before, atol=1e-6)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        layer(x, rank=5)


@pytest.mark.parametrize("bad", [0, -1, 6, 2.5, True])
def test_bad_rank_raises_with_allowed_range(bad):
    with pytest.raises(ValueError, match=r"1\.\.5"):
        LowRankLinear(5, 8, rank=bad)


def test_groups_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="groups=1"):
        LowRankConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="≥ 1"):
        LowRankLinear(0, 3)
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        LowRankLinear.from_dense(nn.Conv2d(1, 1, 1))


def test_use_ranks_sets_and_restores_active_ranks():
    model = nn.Sequential(LowRankLinear(6, 6), nn.ReLU(), LowRankLinear(6, 4))
    x = torch.randn(3, 6)
    expected = model[2](torch.relu(model[0](x, rank=2)), rank=1)
    with use_ranks(model, {"0": 2, "2": 1}):
        assert torch.allclose(model(x), expected)
    assert model[0]._active_rank is None and model[2]._active_rank is None
    with pytest.raises(ValueError, match="unknown low-rank layers"), use_ranks(model, {"nope": 1}):
        pass


def test_budget_rank_is_ceiling_and_at_least_one():
    assert budget_rank(10, 0.25) == 3
    assert budget_rank(5, 0.6) == 3  # 0.6·5 is 3.0000000000000004 in floating point
    assert budget_rank(3, 0.01) == 1
    assert budget_rank(7, 1.0) == 7
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        budget_rank(4, 0.0)


def test_use_budget_runs_the_nested_submodel():
    model = nn.Sequential(LowRankLinear(8, 8), LowRankLinear(8, 8, rank=4))
    assert budget_ranks(model, 0.5) == {"0": 4, "1": 2}
    assert list(low_rank_layers(model)) == ["0", "1"]
    x = torch.randn(2, 8)
    with use_budget(model, 0.5):
        out = model(x)
    assert torch.allclose(out, model[1](model[0](x, rank=4), rank=2))


def _built_then_factored(cls, module, rank, **options):
    """from_dense as it was: a plain constructor (its fresh init factored too), then the module."""
    if isinstance(module, nn.Linear):
        layer = cls(12, 6, rank)
    else:
        layer = cls(4, 6, 3, padding=1, rank=rank, **options)
    layer._init_from_weight(module.weight, module.bias)
    return layer


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (LowRankLinear, {}),
        (LowRankConv2d, {}),
        (TuckerConv2d, {}),
        (BranchedTuckerConv2d, {"branches": 2}),
    ],
)
@pytest.mark.parametrize("rank", [None, 2])
def test_from_dense_skips_the_fresh_factoring_with_the_same_bits_and_random_stream(
    cls, options, rank
):
    dense = nn.Linear(12, 6) if cls is LowRankLinear else nn.Conv2d(4, 6, 3, padding=1)
    torch.manual_seed(5)
    expected = _built_then_factored(cls, dense, rank, **options)
    after_expected = torch.rand(3)
    torch.manual_seed(5)
    layer = cls.from_dense(dense, rank, **options)
    after = torch.rand(3)
    assert layer.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key
    # The fresh dense init was still drawn: what comes after sees the same random numbers.
    assert torch.equal(after, after_expected)


def test_a_constructor_after_from_dense_factors_its_fresh_init_again():
    with pytest.raises(ValueError):
        LowRankLinear.from_dense(nn.Linear(3, 2), rank=9)  # fails inside the deferred build
    torch.manual_seed(1)
    layer = LowRankLinear(6, 4)
    torch.manual_seed(1)
    fresh = nn.Linear(6, 4)
    assert torch.allclose(layer.dense_weight(), fresh.weight, atol=1e-6)
    assert torch.equal(layer.bias, fresh.bias)
