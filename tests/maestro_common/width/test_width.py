"""Tests of width-sliceable models (FjORD / HeteroFL baselines) and their budget accounting."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import pytest
import torch
from torch import nn

from maestro_common.lowrank import layers
from maestro_common.lowrank.accounting import (
    count_macs,
    count_macs_flop_counter,
    count_params,
)
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.training import evaluate
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.models import build_model
from maestro_common.ml.prefix import budget_dim, leading_block
from maestro_common.width.sliceable import (
    WidthConv2d,
    WidthLinear,
    make_width_sliceable,
    use_width,
    width_layers,
    width_shapes,
)

SHAPE = (1, 28, 28)
WIDTHS = (0.2, 0.37, 0.5)


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    """A width model and an untouched dense copy with the same weights."""
    torch.manual_seed(0)
    dense = build_model(name)
    model = build_model(name)
    model.load_state_dict(dense.state_dict())
    return make_width_sliceable(model), dense


def sliced_cnn(full: nn.Module, p: float) -> nn.Module:
    """The width-p FedAvg CNN as a separate dense model, holding leading blocks of the weights."""
    c1, c2, h = budget_dim(32, p), budget_dim(64, p), budget_dim(512, p)
    small = nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 49, h),
        nn.ReLU(),
        nn.Linear(h, 10),
    )
    _load_blocks(small, full, {"0": "conv1", "3": "conv2", "7": "fc1", "9": "fc2"})
    return small


def sliced_lenet(full: nn.Module, p: float) -> nn.Module:
    """The width-p LeNet-5 as a separate dense model (feature maps 5×5 after the second pool)."""
    c1, c2 = budget_dim(6, p), budget_dim(16, p)
    h1, h2 = budget_dim(120, p), budget_dim(84, p)
    small = nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 25, h1),
        nn.ReLU(),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Linear(h2, 10),
    )
    _load_blocks(small, full, {"0": "conv1", "3": "conv2", "7": "fc1", "9": "fc2", "11": "fc3"})
    return small


def _load_blocks(small: nn.Module, full: nn.Module, names: dict[str, str]) -> None:
    full_state = full.state_dict()
    state = {}
    for key, t in small.state_dict().items():
        index, _, leaf = key.partition(".")
        state[key] = full_state[f"{names[index]}.{leaf}"][leading_block(t.shape)].clone()
    small.load_state_dict(state)


SLICED = {"cnn": sliced_cnn, "lenet5": sliced_lenet}


@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_full_width_equals_the_original_model(name: str) -> None:
    model, dense = pair(name)
    x = torch.randn(4, *SHAPE)
    assert model.state_dict().keys() == dense.state_dict().keys()
    assert torch.equal(model(x), dense(x))
    with use_width(model, 1.0):
        assert torch.equal(model(x), dense(x))


def test_make_width_sliceable_shares_parameters_and_fixes_the_classifier() -> None:
    torch.manual_seed(0)
    model = build_model("cnn")
    params = dict(model.named_parameters())
    make_width_sliceable(model)
    assert {n: id(p) for n, p in model.named_parameters()} == {n: id(p) for n, p in params.items()}
    found = width_layers(model)
    assert list(found) == ["conv1", "conv2", "fc1", "fc2"]
    assert isinstance(model.conv1, WidthConv2d) and isinstance(model.fc1, WidthLinear)
    assert [m.fixed_out for m in found.values()] == [False, False, False, True]
    assert make_width_sliceable(model) is model  # idempotent


@pytest.mark.parametrize("p", WIDTHS)
@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_width_p_equals_a_separately_built_small_model(name: str, p: float) -> None:
    model, dense = pair(name)
    small = SLICED[name](dense, p)
    x = torch.randn(4, *SHAPE)
    with use_width(model, p):
        out = model(x)
    torch.testing.assert_close(out, small(x), rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 10)
    # The small model's parameters are exactly what width_shapes says the sub-model uses.
    shapes = width_shapes(model, p, SHAPE)
    assert list(shapes.values()) == [tuple(t.shape) for t in small.state_dict().values()]


def test_cnn_width_shapes_at_0_2_by_hand() -> None:
    model, _ = pair("cnn")
    # ⌈0.2·32⌉ = 7, ⌈0.2·64⌉ = 13, ⌈0.2·512⌉ = 103; fc1 sees 13 channels of 7×7 = 637 features.
    assert width_shapes(model, 0.2, SHAPE) == {
        "conv1.weight": (7, 1, 5, 5),
        "conv1.bias": (7,),
        "conv2.weight": (13, 7, 5, 5),
        "conv2.bias": (13,),
        "fc1.weight": (103, 13 * 49),
        "fc1.bias": (103,),
        "fc2.weight": (10, 103),
        "fc2.bias": (10,),
    }
    assert width_shapes(model, 1.0, SHAPE) == {
        k: tuple(t.shape) for k, t in model.state_dict().items()
    }


@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_gradients_touch_only_the_leading_blocks(name: str) -> None:
    model, _ = pair(name)
    p = 0.37
    with use_width(model, p):
        model(torch.randn(4, *SHAPE)).square().sum().backward()
    shapes = width_shapes(model, p, SHAPE)
    for key, param in model.named_parameters():
        block = leading_block(shapes[key])
        assert param.grad[block].abs().sum() > 0, key
        outside = param.grad.clone()
        outside[block] = 0
        assert torch.count_nonzero(outside) == 0, key


def test_use_width_restores_and_nests() -> None:
    model, _ = pair("cnn")
    with use_width(model, 0.5):
        with use_width(model, 0.2):
            assert model.conv1.active_width == 0.2
        assert model.conv1.active_width == 0.5
    assert all(m.active_width is None for m in width_layers(model).values())
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="width"), use_width(model, bad):
            pass


def test_too_wide_input_is_refused() -> None:
    layer = WidthLinear.from_module(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="at most 4"):
        layer(torch.randn(2, 5))
    conv = WidthConv2d.from_module(nn.Conv2d(2, 3, 3))
    with pytest.raises(ValueError, match="at most 2"):
        conv(torch.randn(1, 3, 5, 5))


REFUSED: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: build_model("resnet18", in_channels=3, image_size=16, width=0.125),
    "transformer": lambda: build_model("transformer", in_channels=3, image_size=16, dim=32),
    "factored": lambda: decompose(build_model("lenet5")),
    "grouped": lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(36, 3)),
    "batchnorm": lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)),
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_unsupported_models_are_refused_untouched(key: str) -> None:
    model = REFUSED[key]()
    before = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match="such as lenet5 and cnn"):
        make_width_sliceable(model)
    assert [type(m) for m in model.modules()] == before
    assert not width_layers(model)


def _config(model: nn.Module, p: float) -> tuple[int, ...]:
    return tuple(budget_dim(m.out_size, p) for m in width_layers(model).values() if not m.fixed_out)


def _breakpoints() -> list[float]:
    # The CNN's hidden widths 32, 64, 512: ⌈p·C⌉ only changes at p = j/C.
    points = {Fraction(j, c) for c in (32, 64, 512) for j in range(1, c + 1)}
    return [float(b) for b in sorted(points)]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.55, 0.9])
def test_width_for_macs_is_the_widest_within_the_target(fraction: float) -> None:
    model, _ = pair("cnn")
    target = fraction * count_macs(model, SHAPE)
    p = width_for_macs(model, SHAPE, target)
    assert 0.0 < p <= 1.0
    assert count_macs(model, SHAPE, p) <= target
    wider = next(b for b in _breakpoints() if b > p and _config(model, b) != _config(model, p))
    assert count_macs(model, SHAPE, wider) > target


def test_width_for_macs_extremes() -> None:
    model, _ = pair("cnn")
    assert width_for_macs(model, SHAPE, count_macs(model, SHAPE)) == 1.0
    narrowest = width_for_macs(model, SHAPE, 0)  # nothing fits: the narrowest model anyway
    assert _config(model, narrowest) == (1, 1, 1)
    with pytest.raises(ValueError, match="make_width_sliceable"):
        width_for_macs(build_model("cnn"), SHAPE, 1e6)


@pytest.mark.parametrize("beta", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_accounting_of_width_models(name: str, beta: float) -> None:
    model, dense = pair(name)
    assert count_macs(model, SHAPE, beta) == count_macs_flop_counter(model, SHAPE, beta)
    shapes = width_shapes(model, beta, SHAPE)
    assert count_params(model, beta, SHAPE) == sum(math.prod(s) for s in shapes.values())
    small = SLICED[name](dense, beta)
    assert count_params(model, beta, SHAPE) == count_params(small)
    assert count_macs(model, SHAPE, beta) == count_macs(small, SHAPE)


def test_accounting_needs_the_input_shape_below_full_width() -> None:
    model, dense = pair("cnn")
    assert count_params(model) == count_params(dense)
    with pytest.raises(ValueError, match="input_shape"):
        count_params(model, 0.5)
    make_width_sliceable(model, input_shape=SHAPE)  # remembered for later calls
    assert count_params(model, 0.5) == count_params(model, 0.5, SHAPE)


def test_use_budget_covers_width_and_factored_models() -> None:
    model, dense = pair("cnn")
    x = torch.randn(8, *SHAPE)
    with use_budget(model, 0.2):
        out = model(x)
    torch.testing.assert_close(out, sliced_cnn(dense, 0.2)(x), rtol=1e-5, atol=1e-6)
    y = torch.randint(0, 10, (8,))
    loss, _ = evaluate(model, x, y, 0.2)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)

    # For a factored model it is exactly the rank context at ⌈β·r_l⌉ of lowrank.layers.
    factored = decompose(build_model("lenet5"))
    x = torch.randn(8, *SHAPE)
    with use_budget(factored, 0.3):
        ours = factored(x)
    with layers.use_ranks(factored, layers.budget_ranks(factored, 0.3)):
        theirs = factored(x)
    assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="budget"), use_budget(nn.Linear(2, 2), 1.5):
        pass
