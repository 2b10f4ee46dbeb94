"""A method's reported step cost is what its local step runs: every forward pass, counted by
``torch.utils.flop_counter`` on the training step's own forward code (``step_loss``)."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from maestro_common.app.config import RunConfig
from maestro_common.app.cost import (
    base_steps,
    match_step_macs,
    matched_steps,
    matched_width_fn,
    received_model,
    round_steps,
    tier_step_macs,
    trained_examples,
)
from maestro_common.app.methods import METHODS
from maestro_common.app.task import build_run_model, input_shape, run_method
from maestro_common.lowrank.accounting import count_macs
from maestro_common.lowrank.training import TrainSettings, step_loss, train
from maestro_common.ml.prefix import array_shapes

TIERS = "0.25,0.5,0.75,1.0"
BATCH = 4
STEPS = 120


def cfg_of(method: str, **changes) -> RunConfig:
    return RunConfig(method=method, model="lenet5", tier_fractions=TIERS, **changes)


def client_step(cfg: RunConfig, beta: float):
    """(the loaded model, the sampler, its reported step MACs) of a tier β client, built as
    :mod:`client.client_app` builds them from the arrays the tier receives."""
    method = run_method(cfg)
    model = build_run_model(cfg)
    shape = input_shape(cfg)
    matched = matched_width_fn(cfg, model, shape)
    budget = method.budget(beta, cfg.tiers, matched)
    grid = [method.budget(b, cfg.tiers, matched) for b in cfg.tiers]
    shapes = method.shapes(model, array_shapes(model.state_dict()), budget, shape)
    loaded = received_model(method, cfg, shapes)
    global_ranks = method.ranks(model)
    sampler = method.sampler(loaded, cfg, budget, grid, 7, beta, global_ranks)
    reported = method.step_macs(loaded, cfg, budget, grid, shape, beta, global_ranks)
    return loaded, sampler, reported


def measured_step_macs(cfg: RunConfig, beta: float) -> tuple[float, float]:
    """(reported, measured) forward MACs per example of one step, measured as FlopCounterMode's
    flops / 2 over ``STEPS`` steps of the training step's forward passes."""
    model, sampler, reported = client_step(cfg, beta)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, *input_shape(cfg), generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    counter = FlopCounterMode(display=False)
    model.eval()
    with torch.no_grad(), counter:
        for _ in range(STEPS):
            step_loss(model, x, y, sampler, Counter())
    return reported, counter.get_total_flops() / 2 / (STEPS * BATCH)


CASES = [
    ("maestro", {}),  # the default nested objective: split
    ("maestro", {"sub_models": "sandwich"}),
    ("maestro", {"sub_models": "random"}),
    ("maestro", {"sub_models": "smallest", "full_pass_share": 0.5}),
    ("maestro", {"sub_models": "alternate"}),
    ("maestro", {"sub_models": "none"}),
    ("maestro", {"sub_models": "sandwich", "sub_batch_share": 0.5}),
    ("maestro", {"objective": "sampled", "sampler": "uniform"}),
    ("maestro", {"objective": "sampled", "sampler": "none"}),
    *((name, {}) for name in METHODS if name != "maestro"),
]


@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize(("method", "changes"), CASES)
def test_reported_step_macs_match_flop_counter(method, changes, beta):
    reported, measured = measured_step_macs(cfg_of(method, **changes), beta)
    # Sampled steps are compared with their mean over 120 seeded draws.
    assert measured == pytest.approx(reported, rel=0.03)


def test_the_per_layer_sampler_is_priced_as_one_pass_at_its_caps_an_upper_bound():
    reported, measured = measured_step_macs(cfg_of("maestro", objective="sampled"), 1.0)
    assert 0.8 * reported < measured <= reported


def test_the_sandwich_costs_about_three_passes_and_the_default_split_and_alternate_about_one():
    cfg = cfg_of("maestro")
    one_pass = count_macs(build_run_model(cfg), input_shape(cfg), 1.0)
    default = tier_step_macs(cfg, 1.0)
    sandwich = tier_step_macs(cfg.replace(sub_models="sandwich"), 1.0)
    alternate = tier_step_macs(cfg.replace(sub_models="alternate"), 1.0)
    prefix_only = tier_step_macs(cfg.replace(sub_models="none"), 1.0)
    assert prefix_only == one_pass
    # 1 + smallest (0.25) + the mean of 0.5 and 0.75: about 2.1 passes by rank.
    assert 1.8 * one_pass < sandwich < 2.4 * one_pass
    # split runs those passes on thirds of the batch: about 2.1 / 3 of a pass
    assert cfg.sub_model_rule == "split"
    assert 0.6 * one_pass < default < 0.8 * one_pass
    assert 0.6 * one_pass < alternate <= one_pass


def test_fjord_is_priced_at_the_mean_of_its_widths():
    cfg = cfg_of("fjord")
    model = build_run_model(cfg)
    shape = input_shape(cfg)
    matched = matched_width_fn(cfg, model, shape)
    widths = [matched(b) for b in cfg.tiers if b <= 0.5]
    expected = np.mean([count_macs(model, shape, w) for w in widths])
    assert tier_step_macs(cfg, 0.5) == pytest.approx(expected)


def test_steps_and_examples_of_a_round():
    cfg = RunConfig(batch_size=10, local_epochs=2)
    assert base_steps(cfg, 25) == 6  # 2 epochs of 3 batches
    assert base_steps(cfg.replace(local_steps=4), 25) == 4
    assert trained_examples(25, 10, 6) == 50  # two whole epochs
    assert trained_examples(25, 10, 4) == 25 + 10  # an epoch, then one batch of the next
    assert trained_examples(0, 10, 4) == 0
    assert matched_steps(10, own_step_macs=3.0, match_step_macs=1.0) == 3
    assert matched_steps(10, own_step_macs=100.0, match_step_macs=1.0) == 1  # at least one
    assert matched_steps(0, 1.0, 1.0) == 0
    with pytest.raises(ValueError, match="step MACs must be > 0"):
        matched_steps(10, 0.0, 1.0)


def test_compute_match_gives_each_tier_the_matched_methods_forward_macs():
    cfg = cfg_of("maestro", compute_match="fjord", local_steps=30)
    for beta in (0.25, 1.0):
        own, match = tier_step_macs(cfg, beta), match_step_macs(cfg, beta)
        steps = round_steps(cfg, 100, own, match)
        assert abs(steps * own - 30 * match) <= own / 2  # the nearest whole number of steps
    # The default nested step costs more than FjORD's at the full tier: fewer steps.
    assert round_steps(cfg, 100, tier_step_macs(cfg, 1.0), match_step_macs(cfg, 1.0)) < 30
    assert match_step_macs(cfg.replace(compute_match=""), 1.0) is None
    assert round_steps(cfg.replace(compute_match=""), 100, 5.0, None) == 30


def test_local_steps_train_exactly_that_many_steps_across_epochs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    result = train(model, x, y, TrainSettings(batch_size=4, steps=7))
    assert result.steps == 7  # 3 batches an epoch: two epochs and one batch
    result = train(model, x, y, TrainSettings(batch_size=4, epochs=2))
    assert result.steps == 6
    with pytest.raises(ValueError, match="steps must be ≥ 0"):
        TrainSettings(steps=-1)


def test_bad_cost_keys_are_refused_with_what_is_allowed():
    from maestro_common.app.config import ConfigError
    from maestro_common.app.task import load_run_config

    with pytest.raises(ConfigError, match="compute-match must be one of"):
        load_run_config({"compute-match": "nope"})
    with pytest.raises(ConfigError, match="sub-batch-share must be in"):
        load_run_config({"sub-batch-share": 0.0})
    with pytest.raises(ConfigError, match="local-steps must be ≥ 0"):
        load_run_config({"local-steps": -1})
    with pytest.raises(ConfigError, match="sub-models must be one of"):
        load_run_config({"sub-models": "every"})
    assert load_run_config({"sub-models": "alternate", "compute-match": "fjord"}).compute_match
