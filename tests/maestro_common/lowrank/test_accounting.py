"""Tests of parameter, MAC and payload accounting at a budget β."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maestro_common.app.codec import model_arrays, prefix_axes
from maestro_common.lowrank.accounting import (
    count_macs,
    count_macs_flop_counter,
    count_params,
)
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import LowRankConv2d, LowRankLinear, budget_rank, low_rank_layers
from maestro_common.ml.models import build_model
from maestro_common.ml.prefix import array_shapes, budget_shapes, payload_nbytes, take_prefix

MODELS: dict[str, tuple[str, dict, tuple[int, ...]]] = {
    "lenet5": ("lenet5", {}, (1, 28, 28)),
    "cnn": ("cnn", {}, (1, 28, 28)),
    "resnet18": (
        "resnet18",
        {"in_channels": 3, "image_size": 16, "width": 0.125, "norm": "batch"},
        (3, 16, 16),
    ),
    "transformer": ("transformer", {"in_channels": 3, "image_size": 16, "dim": 32}, (3, 16, 16)),
    "char-transformer": ("char-transformer", {"dim": 32, "depth": 2, "context": 12}, (12,)),
    "char-lstm": ("char-lstm", {"hidden": 24, "context": 12}, (12,)),
}
BETAS = (0.25, 0.5, 1.0)


def tier_payload(model: nn.Module, beta: float) -> int:
    """Bytes a tier of budget β receives, the way the server counts them."""
    arrays = model_arrays(model)
    shapes = budget_shapes(array_shapes(arrays), prefix_axes(model), beta)
    return payload_nbytes(take_prefix(arrays, shapes))


def make(key: str, factored: bool) -> tuple[nn.Module, tuple[int, ...]]:
    name, kwargs, shape = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    return (decompose(model) if factored else model), shape


def tiny_linear() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))


def tiny_conv() -> nn.Module:
    # (2, 6, 6) → conv 3×3 → (4, 4, 4) → flatten 64 → 5
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 5))


@pytest.mark.parametrize("factored", [False, True], ids=["dense", "factored"])
@pytest.mark.parametrize("key", MODELS)
def test_formula_matches_flop_counter(key: str, factored: bool) -> None:
    model, shape = make(key, factored)
    counts = [count_macs(model, shape, beta) for beta in BETAS]
    for beta, macs in zip(BETAS, counts, strict=True):
        assert macs == count_macs_flop_counter(model, shape, beta)
    if factored:
        assert counts[0] < counts[1] < counts[2]
    else:
        assert counts[0] == counts[1] == counts[2]


def test_tiny_linear_by_hand() -> None:
    model = tiny_linear()
    # Dense: weights 6·4 + 4·3, biases 4 + 3; MACs 6·4 + 4·3.
    assert count_params(model) == 43
    assert count_macs(model, (6,)) == 36
    decompose(model, skip=())
    # Ranks 4 and 3; at β = 0.5 caps ⌈2⌉ = 2 and ⌈1.5⌉ = 2.
    # Params 2·(4+6)+4 + 2·(3+4)+3 = 41; MACs 2·(6+4) + 2·(4+3) = 34.
    assert count_params(model, 0.5) == 41
    assert count_macs(model, (6,), 0.5) == 34
    # At β = 1: 4·10+4 + 3·7+3 = 68 params, 4·10 + 3·7 = 61 MACs (more than dense).
    assert count_params(model) == 68
    assert count_macs(model, (6,)) == 61


def test_tiny_conv_by_hand() -> None:
    model = tiny_conv()
    # Dense conv: 4·2·9 + 4 params, 16 positions·4·2·9 = 1152 MACs; BN 8 params;
    # linear 64·5 + 5 params, 320 MACs.
    assert count_params(model) == 76 + 8 + 325
    assert count_macs(model, (2, 6, 6)) == 1152 + 320
    decompose(model, skip=())
    # Conv rank min(4, 18) = 4 → cap 2; linear rank min(5, 64) = 5 → cap 3.
    # Conv: 2·(4 + 18) + 4 params, 16·2·18 + 16·4·2 = 704 MACs.
    # Linear: 3·(5 + 64) + 5 params, 3·(64 + 5) = 207 MACs.
    assert count_params(model, 0.5) == 48 + 8 + 212
    assert count_macs(model, (2, 6, 6), 0.5) == 704 + 207


def test_lenet5_dense_macs_by_hand() -> None:
    model = build_model("lenet5")
    conv1 = 28 * 28 * 6 * 1 * 25
    conv2 = 10 * 10 * 16 * 6 * 25
    fcs = 400 * 120 + 120 * 84 + 84 * 10
    assert count_macs(model, (1, 28, 28)) == conv1 + conv2 + fcs == 416_520


def test_transformer_attention_macs_counted() -> None:
    model = build_model("transformer", in_channels=3, image_size=8, dim=32, depth=1, heads=4)
    tokens = (8 // 4) ** 2 + 1
    patch = 4 * 32 * 3 * 16  # 4 patches, 32 outputs, 3·4·4 inputs
    projections = 4 * tokens * 32 * 32  # q, k, v, out
    mlp = 2 * tokens * 32 * 64  # mlp_ratio 2
    attention = 4 * tokens * tokens * (8 + 8)  # heads · N² · (d_k + d_v)
    head = 32 * 10
    expected = patch + projections + mlp + attention + head
    assert count_macs(model, (3, 8, 8)) == expected
    assert count_macs_flop_counter(model, (3, 8, 8)) == expected


def test_char_transformer_macs_by_hand() -> None:
    t, d, vocab = 6, 16, 81
    model = build_model("char-transformer", num_classes=vocab, dim=d, depth=1, heads=2, context=t)
    projections = 4 * t * d * d  # q, k, v, out
    mlp = 2 * t * d * 4 * d  # mlp_ratio 4
    attention = 2 * t * t * (8 + 8)  # heads · T² · (d_k + d_v): the causal mask is not discounted
    head = t * d * vocab
    expected = projections + mlp + attention + head
    assert count_macs(model, (t,)) == count_macs_flop_counter(model, (t,)) == expected


def test_char_lstm_macs_by_hand() -> None:
    t, e, h, vocab = 5, 8, 12, 81
    model = build_model("char-lstm", num_classes=vocab, embed=e, hidden=h, context=t)
    gates = 4 * t * (e * h + h * h) + 4 * t * (h * h + h * h)  # layer 0, layer 1; per step
    expected = gates + t * h * vocab
    assert count_macs(model, (t,)) == count_macs_flop_counter(model, (t,)) == expected
    factored = decompose(model)
    k = budget_rank(h, 0.5)  # every hidden gate matrix at rank ⌈0.5·12⌉; x gates of layer 0 ⌈4⌉
    low = 4 * t * (budget_rank(e, 0.5) * (e + h) + k * 2 * h) + 8 * t * k * 2 * h
    assert count_macs(factored, (t,), 0.5) == low + t * h * vocab


@pytest.mark.parametrize(
    "key", ["lenet5", "resnet18", "transformer", "char-transformer", "char-lstm"]
)
def test_params_and_payload_shrink_with_budget(key: str) -> None:
    model, _ = make(key, factored=True)
    betas = (0.1, 0.25, 0.5, 0.75, 1.0)
    params = [count_params(model, b) for b in betas]
    payload = [tier_payload(model, b) for b in betas]
    assert params == sorted(params) and payload == sorted(payload)
    assert params[1] < params[-1] and payload[1] < payload[-1]
    # At full budget the counts are those of the whole model.
    assert params[-1] == sum(p.numel() for p in model.parameters())
    assert payload[-1] == sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.7, 1.0])
def test_tier_payload_equals_hand_sliced_state_dict(beta: float) -> None:
    model = decompose(tiny_conv(), skip=())
    model[3].double()  # mixed element sizes: the sliced linear factors are float64
    conv, linear = model[0], model[3]
    assert isinstance(conv, LowRankConv2d) and isinstance(linear, LowRankLinear)
    kc, kl = budget_rank(conv.rank, beta), budget_rank(linear.rank, beta)
    sliced = {
        "0.u": conv.u[:, :kc],
        "0.v": conv.v[:kc],
        "0.bias": conv.bias,
        "1.weight": model[1].weight,
        "1.bias": model[1].bias,
        "1.running_mean": model[1].running_mean,
        "1.running_var": model[1].running_var,
        "1.num_batches_tracked": model[1].num_batches_tracked,
        "3.u": linear.u[:, :kl],
        "3.v": linear.v[:, :kl],
        "3.bias": linear.bias,
    }
    assert set(sliced) == set(model.state_dict())
    expected = sum(t.numel() * t.element_size() for t in sliced.values())
    assert tier_payload(model, beta) == expected


def test_counts_respect_truncated_rank() -> None:
    model = decompose(tiny_linear(), skip=())
    for layer in low_rank_layers(model).values():
        layer.truncate(2)
    # Both layers keep 2 components; β = 0.5 caps them at 1.
    assert count_params(model, 0.5) == (4 + 6) + 4 + (3 + 4) + 3
    assert count_macs(model, (6,), 0.5) == (6 + 4) + (4 + 3)


def test_macs_leave_training_state_and_statistics_alone() -> None:
    model, shape = make("resnet18", factored=True)
    model.train()
    model.fc.eval()  # mixed modes must be restored module by module
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    count_macs(model, shape, 0.5)
    count_macs_flop_counter(model, shape, 0.5)
    assert model.training and bn.training and not model.fc.training
    assert torch.equal(bn.running_mean, before[0])
    assert torch.equal(bn.num_batches_tracked, before[1])
    assert all(layer._active_rank is None for layer in low_rank_layers(model).values())


@pytest.mark.parametrize("beta", [0.0, -0.5, 1.5])
def test_invalid_budget_raises(beta: float) -> None:
    model = tiny_linear()
    with pytest.raises(ValueError, match="budget"):
        count_params(model, beta)
    with pytest.raises(ValueError, match="budget"):
        count_macs(model, (6,), beta)
    with pytest.raises(ValueError, match="budget"):
        count_macs_flop_counter(model, (6,), beta)
