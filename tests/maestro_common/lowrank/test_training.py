"""Tests of the nested training step, the per-step lr schedule and the step-cost accounting."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import low_rank_layers, use_ranks
from maestro_common.lowrank.samplers import NestedSampler, WidthSampler
from maestro_common.lowrank.training import (
    TrainSettings,
    evaluate,
    evaluate_metrics,
    make_optimizer,
    nested_loss,
    train,
)
from maestro_common.ml.models import build_model
from maestro_common.width.sliceable import make_width_sliceable


def _factored():
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1, 28)
    decompose(model)
    return model


def _data(n=64):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _ranks(model):
    return {n: m.rank for n, m in low_rank_layers(model).items()}


def test_nested_loss_is_prefix_ce_plus_each_sub_models_loss():
    model = _factored()
    x, y = _data(16)
    sampler = NestedSampler(_ranks(model), grid=(0.25, 1.0), seed=0)
    passes = Counter()
    task, objective = nested_loss(model, x, y, sampler, passes)
    full = model(x)
    with use_ranks(model, sampler.ranks_at(0.25)):
        small = model(x)
    expected_task = F.cross_entropy(full, y)
    expected = expected_task + F.cross_entropy(small, y)
    assert task.item() == pytest.approx(expected_task.item(), rel=1e-5)
    assert objective.item() == pytest.approx(expected.item(), rel=1e-5)
    assert passes == {1.0: 1, 0.25: 1}


def test_split_runs_each_pass_on_its_own_part_of_the_batch():
    model = _factored()
    x, y = _data(16)
    sampler = NestedSampler(_ranks(model), grid=(0.25, 0.5, 1.0), rule="split", seed=0)
    passes = Counter()
    task, objective = nested_loss(model, x, y, sampler, passes)
    # 16 examples, 3 passes: parts of 6, 5 and 5, the prefix's first.
    expected_task = F.cross_entropy(model(x[:6]), y[:6])
    with use_ranks(model, sampler.ranks_at(0.25)):
        small = F.cross_entropy(model(x[6:11]), y[6:11])
    with use_ranks(model, sampler.ranks_at(0.5)):
        middle = F.cross_entropy(model(x[11:]), y[11:])
    assert task.item() == pytest.approx(expected_task.item(), rel=1e-5)
    assert objective.item() == pytest.approx((expected_task + small + middle).item(), rel=1e-5)
    assert passes == {1.0: 1, 0.25: 1, 0.5: 1}
    # A batch smaller than the passes runs every pass on all of it, as the sandwich does.
    task, _ = nested_loss(model, x[:2], y[:2], sampler, passes)
    assert task.item() == pytest.approx(F.cross_entropy(model(x[:2]), y[:2]).item(), rel=1e-5)


def test_components_beyond_the_smallest_sub_model_get_the_prefix_gradient_only():
    model = _factored()
    x, y = _data(16)
    sampler = NestedSampler(_ranks(model), grid=(0.25, 1.0))
    _, objective = nested_loss(model, x, y, sampler, Counter())
    objective.backward()
    with_sub = model.fc1.u.grad.clone()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    only_full = model.fc1.u.grad
    # Components beyond the smallest sub-model's get the prefix's gradient only.
    k = sampler.ranks_at(0.25)["fc1"]
    torch.testing.assert_close(with_sub[:, k:], only_full[:, k:])
    assert not torch.allclose(with_sub[:, :k], only_full[:, :k])


def test_train_with_the_nested_sampler_counts_passes_and_cost():
    model = _factored()
    x, y = _data(64)
    sampler = NestedSampler(_ranks(model), grid=(0.25, 0.5, 0.75, 1.0), seed=0)
    result = train(model, x, y, TrainSettings(batch_size=16, lr=0.01), sampler)
    assert result.steps == 4
    assert result.passes[1.0] == 4 and result.passes[0.25] == 4
    assert result.passes.get(0.5, 0) + result.passes.get(0.75, 0) == 4
    cost = result.cost_per_step(lambda p: 100 * p, 100)
    assert cost == pytest.approx(
        1.0 + 0.25 + sum(p * n for p, n in result.passes.items() if p in (0.5, 0.75)) / 4
    )


def test_width_sampler_passes_record_the_sampled_widths():
    torch.manual_seed(0)
    model = make_width_sliceable(build_model("lenet5", 10, 1, 28), (1, 28, 28))
    x, y = _data(64)
    result = train(model, x, y, TrainSettings(batch_size=8, lr=0.01), WidthSampler([0.5, 1.0]))
    assert sum(result.passes.values()) == 8 and set(result.passes) <= {0.5, 1.0}


def test_lr_schedule_sets_the_lr_of_every_step(monkeypatch):
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    model = build_model("lenet5", 10, 1, 28)
    x, y = _data(32)
    settings = TrainSettings(batch_size=8, lr=0.1, lr_schedule="cosine")
    train(model, x, y, settings, step_offset=4, total_steps=8)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(4, 8)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(0.05) and seen[-1] > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainSettings(lr_schedule="linear")
    with pytest.raises(ValueError, match="lasso, weight_decay and max_grad_norm"):
        TrainSettings(lasso=-1.0)


@pytest.mark.parametrize(("n", "steps"), [(64, 3), (20, 7), (64, 0)])
def test_a_step_budget_runs_exactly_that_many_steps_across_reshuffled_passes(n, steps):
    model = build_model("lenet5", 10, 1, 28)
    x, y = _data(n)
    settings = TrainSettings(batch_size=8, lr=0.01, epochs=1, steps=steps)
    result = train(model, x, y, settings)
    assert result.steps == (steps or math.ceil(n / 8))
    assert result.num_examples == n  # the reply's weight stays the local data's size


def test_a_negative_step_budget_is_refused():
    with pytest.raises(ValueError, match="steps must be ≥ 0"):
        TrainSettings(steps=-1)


class _Bigram(torch.nn.Module):
    """A token model with logits (B, V, T): position t's logits depend on token t only."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x].transpose(1, 2)  # (B, T, V) -> (B, V, T)


def test_evaluate_metrics_on_token_windows_counts_every_position_and_the_last_one():
    vocab = 4
    table = torch.full((vocab, vocab), -10.0)
    table[torch.arange(vocab), (torch.arange(vocab) + 1) % vocab] = 10.0  # predicts x + 1
    x = torch.tensor([[0, 1, 2], [1, 2, 3]])
    # Predictions are [[1, 2, 3], [2, 3, 0]]: right at positions 0, 1 and at 0, 2.
    y = torch.tensor([[1, 2, 0], [2, 0, 0]])
    metrics = evaluate_metrics(_Bigram(table), x, y, batch_size=1)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["accuracy-last"] == pytest.approx(1 / 2)
    loss = F.cross_entropy(_Bigram(table)(x), y).item()
    assert metrics["loss"] == pytest.approx(loss, rel=1e-6)
    assert evaluate(_Bigram(table), x, y) == pytest.approx((loss, 4 / 6))


def test_images_have_no_last_position_metric():
    x, y = _data(16)
    assert set(evaluate_metrics(build_model("lenet5", 10, 1, 28), x, y)) == {"loss", "accuracy"}


def test_evaluate_averages_a_sequence_models_loss_and_accuracy_over_positions():
    torch.manual_seed(0)
    model = build_model("char-lstm", 81, hidden=16, context=6)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 81, (5, 6), generator=gen)
    y = torch.randint(0, 81, (5, 6), generator=gen)
    loss, acc = evaluate(model, x, y, batch_size=2)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert 0.0 <= acc <= 1.0


def test_the_local_optimiser_is_sgd_or_a_fresh_adam():
    model = build_model("lenet5", 10, 1, 28)
    sgd = make_optimizer(model, TrainSettings(lr=0.1, momentum=0.5))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    adam = make_optimizer(model, TrainSettings(lr=0.003, optimizer="adam", weight_decay=1e-4))
    assert isinstance(adam, torch.optim.Adam) and not adam.state
    assert adam.param_groups[0]["lr"] == 0.003 and adam.param_groups[0]["weight_decay"] == 1e-4
    x, y = _data(32)
    result = train(model, x, y, TrainSettings(batch_size=8, lr=0.003, optimizer="adam"))
    assert result.steps == 4 and math.isfinite(result.loss)
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        TrainSettings(optimizer="lbfgs")
