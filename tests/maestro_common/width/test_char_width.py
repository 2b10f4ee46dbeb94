"""Width baselines (FjORD / HeteroFL) on the character models, through their width plans."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from maestro_common.lowrank.accounting import count_macs, count_macs_flop_counter, count_params
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.models import SEQUENCE_MODELS, CharLSTM, build_model
from maestro_common.ml.models.plans import WidthPlan
from maestro_common.ml.prefix import budget_dim, leading_block
from maestro_common.width.sliceable import (
    make_width_sliceable,
    use_width,
    width_layers,
    width_shapes,
)

VOCAB, T = 81, 10
SHAPE = (T,)
DIM, HEADS, HIDDEN = 32, 4, 24
CONFIGS: dict[str, dict] = {
    "char-transformer": {"dim": DIM, "depth": 2, "heads": HEADS, "context": T},
    "char-lstm": {"hidden": HIDDEN, "context": T},
}
WIDTHS = (0.2, 0.5, 0.8)


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    """A width model and an untouched dense copy with the same weights."""
    torch.manual_seed(0)
    dense = build_model(name, num_classes=VOCAB, **CONFIGS[name])
    return make_width_sliceable(copy.deepcopy(dense), SHAPE), dense


def tokens(batch: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, T), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_full_width_equals_the_original_model(name: str) -> None:
    model, dense = pair(name)
    x = tokens()
    assert model.state_dict().keys() == dense.state_dict().keys()
    with use_width(model, 1.0):
        torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)


def test_transformer_plan_fixes_the_residual_writers_and_cuts_whole_heads() -> None:
    model, _ = pair("char-transformer")
    layers = width_layers(model)
    fixed = {n for n, m in layers.items() if m.fixed_out}
    assert fixed == {"head"} | {f"blocks.{i}.{n}" for i in (0, 1) for n in ("attn.out", "fc2")}
    assert {n for n, m in layers.items() if m.width_unit == DIM // HEADS} == {
        f"blocks.{i}.attn.{n}" for i in (0, 1) for n in "qkv"
    }
    assert layers["blocks.0.attn.q"].width_steps == HEADS  # widths change at whole heads only
    shapes = width_shapes(model, 0.3, SHAPE)  # ⌈0.3·4⌉ = 2 heads of 8; ⌈0.3·128⌉ = 39 units
    assert shapes["blocks.0.attn.q.weight"] == (16, DIM)
    assert shapes["blocks.1.attn.v.bias"] == (16,)
    assert shapes["blocks.0.attn.out.weight"] == (DIM, 16)
    assert shapes["blocks.0.fc1.weight"] == (39, DIM)
    assert shapes["blocks.0.fc2.weight"] == (DIM, 39)
    assert shapes["head.weight"] == (VOCAB, DIM)
    for key in ("tok_embed.weight", "pos_embed.weight", "blocks.0.norm1.weight", "norm.bias"):
        assert shapes[key] == tuple(model.state_dict()[key].shape)


@pytest.mark.parametrize("p", WIDTHS)
def test_transformer_width_p_equals_the_full_model_with_dropped_units_silenced(p: float) -> None:
    # A dropped head contributes only through its columns of `out`, a dropped MLP unit only through
    # its column of fc2: zeroing those columns in the dense model gives the width-p function.
    model, dense = pair("char-transformer")
    reference = copy.deepcopy(dense)
    d_head = DIM // HEADS
    heads_k, hidden_k = budget_dim(HEADS, p), budget_dim(4 * DIM, p)
    with torch.no_grad():
        for block in reference.blocks:
            block.attn.out.weight[:, heads_k * d_head :] = 0
            block.fc2.weight[:, hidden_k:] = 0
    x = tokens()
    with use_width(model, p):
        out = model(x)
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)


def sliced_lstm(full: nn.Module, p: float) -> nn.Module:
    """The width-p char LSTM as a separately built dense model holding leading weight blocks."""
    small = CharLSTM(vocab=VOCAB, context=T, hidden=budget_dim(HIDDEN, p))
    full_state = full.state_dict()
    small.load_state_dict(
        {k: full_state[k][leading_block(t.shape)].clone() for k, t in small.state_dict().items()}
    )
    return small


@pytest.mark.parametrize("p", WIDTHS)
def test_lstm_width_p_equals_a_separately_built_small_model(p: float) -> None:
    model, dense = pair("char-lstm")
    small = sliced_lstm(dense, p)
    x = tokens()
    with use_width(model, p):
        out = model(x)
    torch.testing.assert_close(out, small(x), rtol=1e-5, atol=1e-6)
    shapes = width_shapes(model, p, SHAPE)
    assert shapes == {k: tuple(t.shape) for k, t in small.state_dict().items()}


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_gradients_touch_only_the_leading_blocks(name: str) -> None:
    model, _ = pair(name)
    p = 0.4
    with use_width(model, p):
        model(tokens()).square().sum().backward()
    shapes = width_shapes(model, p, SHAPE)
    cut = 0
    for key, param in model.named_parameters():
        cut += shapes[key] != tuple(param.shape)
        block = leading_block(shapes[key])
        assert param.grad[block].abs().sum() > 0, key
        outside = param.grad.clone()
        outside[block] = 0
        assert torch.count_nonzero(outside) == 0, key
    assert cut > 0  # the sub-model really is smaller


@pytest.mark.parametrize("beta", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_accounting_of_width_char_models(name: str, beta: float) -> None:
    model, dense = pair(name)
    macs = count_macs(model, SHAPE, beta)
    assert macs == count_macs_flop_counter(model, SHAPE, beta)
    shapes = width_shapes(model, beta, SHAPE)
    assert count_params(model, beta, SHAPE) == sum(math.prod(s) for s in shapes.values())
    if beta == 1.0:
        assert macs == count_macs(dense, SHAPE)
    else:
        assert macs < count_macs(dense, SHAPE)
    if name == "char-lstm":
        small = sliced_lstm(dense, beta)
        assert count_params(model, beta, SHAPE) == count_params(small)
        assert macs == count_macs(small, SHAPE)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_width_for_macs_on_char_models(name: str) -> None:
    model, _ = pair(name)
    full = count_macs(model, SHAPE)
    for fraction in (0.3, 0.7):
        p = width_for_macs(model, SHAPE, fraction * full)
        assert count_macs(model, SHAPE, p) <= fraction * full
    assert width_for_macs(model, SHAPE, full) == 1.0


class _Declares(nn.Module):
    """A LayerNorm model whose plan forgets the norm (still refused) or names a missing layer."""

    def __init__(self, plan: WidthPlan) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)
        self._plan = plan

    def width_plan(self) -> WidthPlan:
        return self._plan


@pytest.mark.parametrize(
    ("plan", "pattern"),
    [
        (WidthPlan(fixed_out=frozenset({"head"})), "such as lenet5 and cnn"),
        (WidthPlan(fixed_out=frozenset({"nope"}), whole=frozenset({"norm"})), "not Conv2d/Linear"),
        (WidthPlan(whole=frozenset({"norm", "gone"})), "does not have"),
        (WidthPlan(units={"fc": 4}, whole=frozenset({"norm"})), "multiple of its unit"),
    ],
)
def test_a_bad_or_incomplete_plan_is_refused_untouched(plan: WidthPlan, pattern: str) -> None:
    model = _Declares(plan)
    with pytest.raises(ValueError, match=pattern):
        make_width_sliceable(model)
    assert not width_layers(model)


def test_a_declared_plan_is_followed() -> None:
    model = make_width_sliceable(
        _Declares(WidthPlan(fixed_out=frozenset({"fc", "head"}), whole=frozenset({"norm"})))
    )
    assert all(m.fixed_out for m in width_layers(model).values())
