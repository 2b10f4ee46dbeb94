import pytest
import torch
from torch import nn

from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose, default_skip, merge_is_cheaper, to_dense
from maestro_common.lowrank.layers import LowRankConv2d, LowRankLinear, low_rank_layers
from tests.small_nets import two_conv_net


def test_default_skip_keeps_first_conv_and_classifier():
    model = two_conv_net()
    assert default_skip(model) == {"0", "7"}
    decompose(model)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[7], nn.Linear)
    assert isinstance(model[2], LowRankConv2d) and isinstance(model[5], LowRankLinear)


def test_decompose_at_full_rank_keeps_outputs():
    model = two_conv_net()
    x = torch.randn(3, 1, 6, 6)
    before = model(x)
    decompose(model)
    assert torch.allclose(model(x), before, atol=1e-5)


def test_skip_is_configurable_and_validated():
    model = decompose(two_conv_net(), skip=[])
    assert set(low_rank_layers(model)) == {"0", "2", "5", "7"}
    with pytest.raises(ValueError, match="not Linear/Conv2d"):
        decompose(two_conv_net(), skip=["4"])


def test_rank_fraction_sets_initial_ranks():
    model = decompose(two_conv_net(), rank_fraction=0.5)
    assert {n: m.rank for n, m in low_rank_layers(model).items()} == {"2": 8, "5": 16}
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        decompose(two_conv_net(), rank_fraction=0)


def test_to_dense_merges_everything_with_unchanged_output():
    model = decompose(two_conv_net(), rank_fraction=0.5)
    x = torch.randn(4, 1, 6, 6)
    before = model(x)
    to_dense(model, beta=1.0)
    assert not low_rank_layers(model)
    assert ((model(x) - before).norm() / before.norm()).item() <= 1e-5


def test_to_dense_only_where_cheaper():
    model = decompose(
        two_conv_net()
    )  # full rank: conv 16·(72+16) ≥ 16·72, linear 32·(576+32) ≥ 32·576
    model[2].truncate(2)  # 2·(72+16) = 176 < 1152: factored stays cheaper
    assert not merge_is_cheaper(model[2]) and merge_is_cheaper(model[5])
    x = torch.randn(2, 1, 6, 6)
    before = model(x)
    to_dense(model, beta=1.0, only_if_cheaper=True)
    assert isinstance(model[2], LowRankConv2d) and isinstance(model[5], nn.Linear)
    assert torch.allclose(model(x), before, atol=1e-5)


def test_to_dense_uses_the_active_budget():
    model = decompose(two_conv_net())
    x = torch.randn(2, 1, 6, 6)
    with use_budget(model, 0.25):
        expected = model(x)
        to_dense(model)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_to_dense_without_a_budget_is_refused():
    # The safe default: a β = 0.2 tier is never silently merged into the full-size model.
    model = decompose(two_conv_net())
    with pytest.raises(ValueError, match="needs a budget"):
        to_dense(model)
    assert low_rank_layers(model)  # nothing was merged


def test_to_dense_at_a_budget_matches_that_tier():
    model = decompose(two_conv_net())
    x = torch.randn(2, 1, 6, 6)
    with use_budget(model, 0.2):
        expected = model(x)
    full = model(x)
    to_dense(model, beta=0.2)
    assert not low_rank_layers(model)
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert not torch.allclose(model(x), full, atol=1e-3)


def test_to_dense_only_where_cheaper_truncates_the_rest_to_the_budget():
    model = decompose(two_conv_net())
    x = torch.randn(2, 1, 6, 6)
    with use_budget(model, 0.2):
        expected = model(x)
    to_dense(model, beta=0.2, only_if_cheaper=True)
    factored = low_rank_layers(model)
    assert factored and all(m.rank < m.max_rank for m in factored.values())
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_to_dense_refuses_a_bad_budget():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        to_dense(decompose(two_conv_net()), beta=1.5)
