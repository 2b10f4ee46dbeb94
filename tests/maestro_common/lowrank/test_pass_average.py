"""Pass-averaged gradients: each parameter's gradient is the mean over the passes that used it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import low_rank_layers, use_ranks
from maestro_common.lowrank.pass_average import average_over_passes, component_counts
from maestro_common.lowrank.samplers import NestedSampler
from maestro_common.lowrank.training import TrainSettings, train
from tests.small_nets import three_conv_net


def test_component_counts_are_the_passes_above_each_component():
    assert component_counts(5, [5, 2, 3]).tolist() == [3, 3, 2, 1, 1]
    assert component_counts(3, []).tolist() == [0, 0, 0]


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: list[dict[str, int]]):
    model.zero_grad(set_to_none=True)
    loss = sum(F.cross_entropy(_run(model, x, r), y) for r in passes)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _run(model: nn.Module, x: torch.Tensor, ranks: dict[str, int]) -> torch.Tensor:
    with use_ranks(model, ranks):
        return model(x)


def test_a_component_used_by_every_pass_gets_the_mean_and_a_trailing_one_its_own_gradient():
    torch.manual_seed(0)
    model = decompose(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)), skip=("3",)
    )
    x, y = torch.randn(5, 12), torch.randint(0, 3, (5,))
    passes = [{"1": 6}, {"1": 2}, {"1": 4}]
    summed = _grads(model, x, y, passes)
    average_over_passes(model, passes)
    got = {n: p.grad for n, p in model.named_parameters()}
    counts = torch.tensor([3.0, 3.0, 2.0, 2.0, 1.0, 1.0])
    torch.testing.assert_close(got["1.u"], summed["1.u"] / counts)
    torch.testing.assert_close(got["1.v"], summed["1.v"] / counts)
    for dense in ("1.bias", "3.weight", "3.bias"):  # used by all three passes
        torch.testing.assert_close(got[dense], summed[dense] / 3)
    # Component 5 is used by the full pass only: its gradient is that pass's alone.
    alone = _grads(copy.deepcopy(model), x, y, passes[:1])
    torch.testing.assert_close(got["1.u"][:, 5], alone["1.u"][:, 5])


def test_a_tucker_core_entry_counts_the_passes_that_use_both_its_components():
    model = three_conv_net("tucker")
    layer_name, layer = next(iter(low_rank_layers(model).items()))
    x, y = torch.randn(2, 1, 6, 6), torch.randint(0, 10, (2,))
    full = {n: m.rank for n, m in low_rank_layers(model).items()}
    passes = [full, {**full, layer_name: 3}]
    summed = _grads(model, x, y, passes)
    average_over_passes(model, passes)
    core = layer.core.grad
    torch.testing.assert_close(core[:3, :3], summed[f"{layer_name}.core"][:3, :3] / 2)
    torch.testing.assert_close(core[:3, 3:], summed[f"{layer_name}.core"][:3, 3:])
    torch.testing.assert_close(core[3:, :3], summed[f"{layer_name}.core"][3:, :3])


def test_one_pass_is_left_alone():
    model = three_conv_net()
    x, y = torch.randn(2, 1, 6, 6), torch.randint(0, 10, (2,))
    full = {n: m.rank for n, m in low_rank_layers(model).items()}
    summed = _grads(model, x, y, [full])
    average_over_passes(model, [full])
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, summed[n])


def test_training_with_pass_average_differs_from_the_sum_and_is_reproducible():
    images, labels = torch.randn(16, 1, 6, 6), torch.randint(0, 10, (16,))
    ranks = {n: m.rank for n, m in low_rank_layers(three_conv_net()).items()}

    def trained(average: bool) -> dict[str, torch.Tensor]:
        model = three_conv_net()
        sampler = NestedSampler(ranks, beta=1.0, grid=(0.25, 0.5, 1.0), seed=0)
        settings = TrainSettings(epochs=1, batch_size=8, lr=0.1, pass_average=average)
        train(model, images, labels, settings, sampler, seed=0)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    mean_a, mean_b, summed = trained(True), trained(True), trained(False)
    assert all(torch.equal(mean_a[n], mean_b[n]) for n in mean_a)
    assert any(not torch.allclose(mean_a[n], summed[n]) for n in mean_a)
