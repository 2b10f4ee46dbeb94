"""FedRolex's rolling window: its groups, its wrap-around, and that the compact window a node
receives computes exactly the window's sub-network of the global model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from maestro_common.app.codec import load_leading_blocks, model_arrays
from maestro_common.ml.index_sets import prefix_sub_model, take_sub_model
from maestro_common.ml.models import build_model
from maestro_common.width.rolling import RollingPlan, rolling_groups, window
from maestro_common.width.sliceable import make_width_sliceable, use_width, width_shapes

VOCAB, T = 81, 10
MODELS = {
    "lenet5": ({}, (1, 28, 28)),
    "cnn": ({}, (1, 28, 28)),
    "char-transformer": ({"dim": 32, "depth": 2, "heads": 4, "context": T}, (T,)),
    "char-lstm": ({"hidden": 24, "context": T}, (T,)),
}


def width_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs, shape = MODELS[name]
    classes = VOCAB if name.startswith("char") else 10
    model = make_width_sliceable(build_model(name, num_classes=classes, **kwargs), shape)
    return model.eval()


def inputs(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if name.startswith("char"):
        return torch.randint(0, VOCAB, (3, T), generator=gen)
    return torch.randn(3, 1, 28, 28, generator=gen)


def test_window_wraps_around():
    assert window(5, 3, 0).tolist() == [0, 1, 2]
    assert window(5, 3, 4).tolist() == [4, 0, 1]
    with pytest.raises(ValueError, match=r"1\.\.5"):
        window(5, 6, 0)


def test_groups_follow_the_flatten_and_the_heads():
    groups = rolling_groups(width_model("cnn"), (1, 28, 28))
    # conv2's 64 outputs one by one; fc1 reads 7·7 features per conv2 channel.
    assert groups["conv2.weight"] == {0: 1, 1: 1}
    assert groups["fc1.weight"] == {0: 1, 1: 49}
    assert "fc2.bias" not in groups  # the classifier's outputs never roll
    char = rolling_groups(width_model("char-transformer"), (T,))
    assert char["blocks.0.attn.q.weight"] == {0: 8}  # whole heads of 32/4 dims
    assert char["blocks.0.attn.out.weight"] == {1: 8}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("server_round", [1, 2, 7])
def test_the_compact_window_is_the_windows_sub_network(name, server_round):
    """The window gathered into a width-p block, run at width p, computes what the global model
    computes with every coordinate outside the window zeroed."""
    model = width_model(name)
    shape = MODELS[name][1]
    plan = RollingPlan(rolling_groups(model, shape))
    arrays = model_arrays(model)
    p = 0.5
    sub = plan.select(arrays, prefix_sub_model(width_shapes(model, p, shape)), server_round, 0, 1)
    assert sub.is_prefix == (server_round == 1)  # round 1 starts the window at 0
    sent = take_sub_model(arrays, sub)
    small = load_leading_blocks(width_model(name), sent)
    masked = {}
    for key, arr in arrays.items():
        out = np.zeros_like(arr)
        where = sub.placement(key, sent[key].shape)
        out[where] = arr[where]
        masked[key] = out
    full = load_leading_blocks(copy.deepcopy(model), masked)
    x = inputs(name)
    with torch.no_grad(), use_width(small, p):
        got = small(x)
    with torch.no_grad():
        want = full(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_every_channel_is_trained_by_a_weak_tier_over_a_cycle():
    model = width_model("cnn")
    plan = RollingPlan(rolling_groups(model, (1, 28, 28)))
    arrays = model_arrays(model)
    prefix = prefix_sub_model(width_shapes(model, 0.25, (1, 28, 28)))
    seen = set()
    for rnd in range(1, 33):  # conv1 has 32 output channels
        sub = plan.select(arrays, prefix, rnd, 0, 1)
        held = np.arange(32)[sub.placement("conv1.bias", prefix.shapes["conv1.bias"])]
        seen |= set(held.tolist())
    assert seen == set(range(32))
    assert prefix.shapes["conv1.bias"][0] < 32  # and it is a weak tier
