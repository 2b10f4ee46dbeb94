"""MAC-aware tier ranks: exact residuals, a greedy order by gain per cost, nested tiers."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from maestro_common.lowrank.accounting import count_macs, count_params, layer_mac_table
from maestro_common.lowrank.allocation import (
    allocate_ranks,
    input_moments,
    rank_order,
    residual_energy,
    tier_ranks,
)
from maestro_common.lowrank.layers import budget_ranks, low_rank_layers
from tests.small_nets import three_conv_net

SHAPE = (1, 6, 6)
BETAS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _inputs_of(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(n, a[0]))
        for n, m in low_rank_layers(model).items()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("kind", ["svd", "tucker"])
@pytest.mark.parametrize("with_inputs", [False, True])
def test_residual_energy_is_the_relative_error_of_each_sub_layer(kind, with_inputs):
    model = three_conv_net(kind).eval()
    x = torch.randn(4, *SHAPE)
    moments = input_moments(model, x) if with_inputs else {}
    inputs = _inputs_of(model, x)
    for name, layer in low_rank_layers(model).items():
        e = residual_energy(layer, moments.get(name))
        assert e.shape == (layer.rank + 1,)
        assert e[0] == pytest.approx(1.0) and e[-1] == 0.0
        for k in (1, layer.rank // 2):
            if with_inputs:  # the error of the layer's outputs on x (bias aside)
                with torch.no_grad():
                    full = layer(inputs[name])
                    cut = layer(inputs[name], k)
                    err = (full - cut).double().pow(2).sum() / (
                        full - _bias_of(layer, full)
                    ).double().pow(2).sum()
            else:  # the error of the weights
                with torch.no_grad():
                    w = layer.dense_weight().double()
                    err = (w - layer.dense_weight(k).double()).pow(2).sum() / w.pow(2).sum()
            assert float(e[k]) == pytest.approx(float(err), rel=1e-5)


def _bias_of(layer: nn.Module, out: torch.Tensor) -> torch.Tensor:
    if layer.bias is None:
        return torch.zeros_like(out)
    shape = (1, -1) + (1,) * (out.dim() - 2)
    return layer.bias.reshape(shape).expand_as(out)


def test_rank_order_takes_the_best_gain_per_cost_and_looks_past_a_weak_component():
    residuals = {
        # a: the second component carries little, the third much: taken together (k 1 → 3).
        "a": torch.tensor([1.0, 0.5, 0.49, 0.0], dtype=torch.float64),
        "b": torch.tensor([1.0, 0.6, 0.3, 0.0], dtype=torch.float64),
    }
    costs = {"a": [0, 1, 2, 3], "b": [0, 2, 4, 6]}
    order = rank_order(residuals, costs)
    # a: (0.5 - 0) / 2 = 0.25 per unit for k 1 → 3; b: 0.3 / 2 = 0.15 for k 1 → 2.
    assert order == [("a", 3), ("b", 2), ("b", 3)]


def test_a_budget_keeps_the_longest_prefix_of_the_order_that_fits():
    order = [("a", 3), ("b", 2), ("b", 3)]
    tables = {"macs": {"a": [0, 1, 2, 3], "b": [0, 2, 4, 6]}}
    base = {"macs": 10}  # plus one component each: 13
    assert allocate_ranks(order, tables, base, {"macs": 14}) == {"a": 1, "b": 1}
    assert allocate_ranks(order, tables, base, {"macs": 15}) == {"a": 3, "b": 1}
    assert allocate_ranks(order, tables, base, {"macs": 17}) == {"a": 3, "b": 2}
    assert allocate_ranks(order, tables, base, {"macs": 19}) == {"a": 3, "b": 3}
    # A step that does not fit ends the walk: a cheaper later step is not taken instead.
    assert allocate_ranks([("b", 2), ("a", 2)], tables, base, {"macs": 14}) == {"a": 1, "b": 1}
    # Every measure must fit.
    both = {**tables, "params": {"a": [0, 5, 10, 15], "b": [0, 1, 2, 3]}}
    limits = {"macs": 19, "params": 9}
    assert allocate_ranks(order, both, {"macs": 10, "params": 0}, limits) == {"a": 1, "b": 1}


def test_layer_mac_table_adds_up_to_count_macs_at_every_uniform_budget():
    model = three_conv_net("svd")
    table = layer_mac_table(model, SHAPE)
    base = count_macs(model, SHAPE) - sum(t[-1] for t in table.values())
    assert base > 0  # the first conv and the classifier stay dense
    for beta in BETAS:
        ranks = budget_ranks(model, beta)
        assert base + sum(table[n][k] for n, k in ranks.items()) == count_macs(model, SHAPE, beta)


@pytest.mark.parametrize("kind", ["svd", "tucker", "tucker-b2"])
def test_tier_ranks_are_nested_and_within_the_uniform_tiers_macs_and_params(kind):
    model = three_conv_net(kind)
    layers = low_rank_layers(model)
    macs = layer_mac_table(model, SHAPE)
    base_macs = count_macs(model, SHAPE) - sum(t[-1] for t in macs.values())
    base_params = count_params(model) - sum(m.params_at(m.rank) for m in layers.values())
    for inputs in (None, torch.randn(8, *SHAPE)):
        tiers = tier_ranks(model, SHAPE, BETAS, inputs=inputs)
        assert tiers[1.0] == {n: m.rank for n, m in layers.items()}
        for small, large in itertools.pairwise(BETAS):
            assert all(tiers[small][n] <= tiers[large][n] for n in layers)
        for beta, ranks in tiers.items():
            assert all(1 <= k <= layers[n].rank for n, k in ranks.items())
            assert base_macs + sum(macs[n][k] for n, k in ranks.items()) <= count_macs(
                model, SHAPE, beta
            )
            assert base_params + sum(
                layers[n].params_at(k) for n, k in ranks.items()
            ) <= count_params(model, beta)


def test_tier_ranks_refuse_a_dense_model_and_a_bad_budget():
    dense = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    with pytest.raises(ValueError, match="no factored layer"):
        tier_ranks(dense, SHAPE, [0.5])
    with pytest.raises(ValueError, match="budget"):
        tier_ranks(three_conv_net("svd"), SHAPE, [1.5])


def test_rank_order_refuses_costs_that_do_not_grow():
    with pytest.raises(ValueError, match="must grow"):
        rank_order({"a": torch.tensor([1.0, 0.5, 0.0])}, {"a": [0, 1, 1]})
