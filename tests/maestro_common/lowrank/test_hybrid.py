"""Hybrid nesting: the first conv nested by width, the factored layers by rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from maestro_common.app.codec import load_arrays, model_arrays, prefix_axes
from maestro_common.lowrank.accounting import count_macs, count_macs_flop_counter, count_params
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose, to_dense
from maestro_common.lowrank.hybrid import hybrid_layers, is_hybrid, make_hybrid, resize_hybrid
from maestro_common.lowrank.inference import tier_model
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import NestedSampler
from maestro_common.lowrank.training import TrainSettings, train
from maestro_common.ml.prefix import array_shapes, budget_shapes, take_prefix
from maestro_common.width.sliceable import WidthConv2d
from tests.small_nets import three_conv_net, two_conv_net

SHAPE = (1, 6, 6)
KINDS = ("svd", "tucker", "tucker-b2")


def hybrid(kind: str = "svd", quantum: int = 1) -> nn.Module:
    return make_hybrid(three_conv_net(kind), SHAPE, quantum)


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_conv_is_nested_by_width_and_the_next_conv_reads_it(kind):
    model = hybrid(kind)
    wide, readers = hybrid_layers(model)
    assert list(wide) == ["0"] and isinstance(model[0], WidthConv2d)
    assert wide["0"].global_out == 8
    assert list(readers) == ["2"]  # the factored conv after it; conv "4" reads whole inputs
    assert is_hybrid(model) and not is_hybrid(three_conv_net(kind))
    axes = prefix_axes(model)
    assert axes["0.weight"] == axes["0.bias"] == (0,)
    assert readers["2"].input_axis in axes["2.v"]  # its input axis, besides its rank axis
    assert low_rank_layers(model)["4"].input_axis not in axes["4.v"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beta", [0.3, 0.5, 1.0])
def test_a_received_prefix_computes_the_global_model_at_its_budget(kind, beta):
    model = hybrid(kind)
    arrays = model_arrays(model)
    shapes = budget_shapes(array_shapes(arrays), prefix_axes(model), beta)
    c = int(np.ceil(beta * 8 - 1e-9))
    assert shapes["0.weight"][0] == c and shapes["0.bias"] == (c,)
    assert shapes["2.v"][model[2].input_axis] == c
    received = load_arrays(hybrid(kind), take_prefix(arrays, shapes))
    x = torch.randn(3, *SHAPE)
    with torch.no_grad(), use_budget(model, beta):
        expected = model(x)
    with torch.no_grad():
        got = received(x)  # the received arrays are the budget's sub-model: run whole
    assert torch.allclose(got, expected, atol=1e-6)
    # Accounting reads the cut off the tensors: the same for the global model at β and the
    # received one whole, and equal to torch's own count and to the arrays sent.
    assert count_macs(received, SHAPE) == count_macs(model, SHAPE, beta)
    assert count_macs(model, SHAPE, beta) == count_macs_flop_counter(model, SHAPE, beta)
    assert count_params(model, beta) == sum(int(np.prod(s)) for s in shapes.values())
    if beta < 1:
        assert count_macs(model, SHAPE, beta) < count_macs(three_conv_net(kind), SHAPE, beta)


def test_channel_counts_round_down_to_the_rank_quantum_as_ranks_do():
    model = hybrid(quantum=4)
    shapes = budget_shapes(array_shapes(model_arrays(model)), prefix_axes(model), 0.7, 4)
    assert shapes["0.weight"][0] == 4 and shapes["2.v"][1] == 4  # ⌈0.7·8⌉ = 6 → 4
    with use_budget(model, 0.7):
        assert model[0].used_dims(torch.zeros(1, 1, 6, 6))[0] == 4
    received = load_arrays(hybrid(quantum=4), take_prefix(model_arrays(model), shapes))
    received(torch.randn(2, *SHAPE))  # the quantized prefix fits together


def test_a_block_bigger_than_the_global_layer_is_refused():
    model = hybrid()
    shapes = array_shapes(model_arrays(model))
    shapes["0.weight"] = (9, 1, 3, 3)  # the layer has 8 outputs
    with pytest.raises(ValueError, match=r"0\.weight has shape \(9, 1, 3, 3\).*leading block"):
        resize_hybrid(model, shapes)


def test_models_that_cannot_be_cut_there_are_refused_and_left_unchanged():
    torch.manual_seed(0)
    normed = decompose(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.Flatten(),
            nn.Linear(16 * 36, 10),
        )
    )
    with pytest.raises(ValueError, match="activations and pooling only"):
        make_hybrid(normed, SHAPE)
    assert type(normed[0]) is nn.Conv2d  # restored
    into_linear = decompose(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.Flatten(),
            nn.Linear(8 * 36, 32),
            nn.Linear(32, 10),
        )
    )
    # A flatten into a linear: its input axis holds channels times positions, not channels.
    with pytest.raises(ValueError, match=r"activations and pooling only.*0 cut failed"):
        make_hybrid(into_linear, SHAPE)
    assert type(into_linear[0]) is nn.Conv2d
    with pytest.raises(ValueError, match="no factored layers"):
        make_hybrid(two_conv_net(), SHAPE)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tier_model_is_a_plain_factored_model_and_merges_exactly(kind):
    model = hybrid(kind)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad(), use_budget(model, 0.4):
        expected = model(x)
    sub = tier_model(model, 0.4)
    assert type(sub[0]) is nn.Conv2d and sub[0].out_channels == 4
    assert sub[2].in_channels == 4 and not is_hybrid(sub)
    with torch.no_grad():
        assert torch.allclose(sub(x), expected, atol=1e-6)
        merged = to_dense(tier_model(model, 0.4), beta=1.0)
        assert torch.allclose(merged(x), expected, atol=1e-5)
    assert isinstance(model[0], WidthConv2d)  # the original is untouched


def test_a_nested_step_trains_each_pass_at_its_own_width():
    """The prefix at β = 0.5 uses 4 of the first conv's 8 outputs and the sub-model at 0.25
    uses 2: rows 4..7 get no gradient and stay bit-identical."""
    model = hybrid()
    before = model[0].weight.detach().clone()
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    sampler = NestedSampler(ranks, beta=0.5, grid=(0.25, 0.5, 1.0), seed=0)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.1)
    train(model, x, y, settings, sampler, seed=0)
    after = model[0].weight.detach()
    assert torch.equal(after[4:], before[4:])
    assert not torch.equal(after[:4], before[:4])
