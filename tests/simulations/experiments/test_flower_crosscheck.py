"""The Flower cross-check's own logic, with stand-in ordered-dropout layers written here.

The cross-check itself needs a checkout of Flower's repository: set ``FLOWER_CHECKOUT`` to one
to run the last test (CI has none, so it is skipped there).
"""

import json
import math
import os
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.ml.models import build_model
from simulations.experiments.flower_crosscheck.__main__ import main
from simulations.experiments.flower_crosscheck.fjord import ODTwin, rounding_sweep
from simulations.experiments.flower_crosscheck.loading import load_flower
from simulations.experiments.flower_crosscheck.ours import (
    layer_dims,
    max_abs_diff,
    our_logits,
    our_width_model,
    param_count,
    random_updates,
)

SHAPE = (1, 28, 28)


def _out(layer, p, exact):
    if p is None:
        return layer.weight.shape[0]
    raw = p * layer.weight.shape[0]
    return math.ceil(raw - 1e-9) if exact else int(np.ceil(raw))


class _Record:
    def __init__(self, *args, is_od=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_od = is_od

    def _record(self, x, p):
        self.last_input_dim = x.shape[1]
        self.last_output_dim = _out(self, p, self.exact)
        return self.last_output_dim, self.last_input_dim


class StandInConv(_Record, nn.Conv2d):
    """An ordered-dropout conv with Flower's calling convention, written for this test."""

    exact = True

    def forward(self, x, p=None):
        out, inp = self._record(x, p)
        bias = self.bias[:out] if self.bias is not None else None
        return self._conv_forward(x, self.weight[:out, :inp], bias)


class StandInLinear(_Record, nn.Linear):
    exact = True

    def forward(self, x, p=None):
        out, inp = self._record(x, p)
        bias = self.bias[:out] if self.bias is not None else None
        return F.linear(x, self.weight[:out, :inp], bias)


class FloatCeilLinear(StandInLinear):
    exact = False  # ⌈p·C⌉ without a tolerance: 0.07·100 = 7.000000000000001 → 8


class FixedSampler:
    def __init__(self, p_s, max_p, model):
        self.p = max(q for q in p_s if q <= max_p)

    def __call__(self):
        return self.p


def _dense(name="lenet5"):
    torch.manual_seed(0)
    return build_model(name)


def test_the_twin_computes_our_width_sub_model_and_records_its_dims():
    dense = _dense()
    twin = ODTwin(dense, StandInConv, StandInLinear).eval()
    ours = our_width_model(dense, SHAPE)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = twin(x)
        assert torch.equal(full, dense(x))  # no sampler: the whole model
        for p in (0.3, 0.5, 1.0):
            theirs = twin(x, sampler=FixedSampler([p], p, twin))
            assert torch.allclose(theirs, our_logits(ours, x, p), atol=1e-6)
            assert twin.dims()["conv2"] == (math.ceil(16 * p), math.ceil(6 * p))
            assert twin.dims()["fc3"][0] == 10  # the classifier is never cut
        # a narrower width really is another function
        assert not torch.allclose(twin(x, sampler=FixedSampler([0.3], 0.3, twin)), full)


def test_twin_parameter_count_matches_the_shapes_it_used():
    dense = _dense()
    twin = ODTwin(dense, StandInConv, StandInLinear).eval()
    with torch.no_grad():
        twin(torch.zeros(1, *SHAPE), sampler=FixedSampler([0.5], 0.5, twin))
    # conv1 3×1×5×5+3, conv2 8×3×5×5+8, fc1 60×(8·25)+60, fc2 42×60+42, fc3 10×42+10
    assert twin.used_params() == 78 + 608 + 12060 + 2562 + 430


def test_agg_config_lists_every_state_entry_with_its_dims_per_p():
    dense = _dense()
    twin = ODTwin(dense, StandInConv, StandInLinear)
    config = twin.agg_config(torch.zeros(1, *SHAPE), [0.5, 1.0], FixedSampler)
    assert len(config["layer"]) == len(dense.state_dict()) == 10
    assert config["layer"][0] == "StandInConv" and config["layer"][-1] == "StandInLinear"
    assert config["layer_p"] == [None] * 10
    assert config[0.5][2] == {"in_dim": 3, "out_dim": 8}  # conv2.weight at p = 0.5
    assert config[1.0][2] == {"in_dim": 6, "out_dim": 16}


def test_rounding_sweep_finds_a_float_ceiling_and_not_an_exact_one():
    exact = types.SimpleNamespace(od_layers=types.SimpleNamespace(ODLinear=StandInLinear))
    floaty = types.SimpleNamespace(od_layers=types.SimpleNamespace(ODLinear=FloatCeilLinear))
    grid = [round(k / 100, 2) for k in range(1, 101)]
    assert rounding_sweep(exact, [10, 100], grid) == []
    diffs = rounding_sweep(floaty, [100], grid)
    assert {"size": 100, "p": 0.07, "theirs": 8, "ours": 7} in diffs


def test_helpers():
    a = {"w": np.zeros((2, 2)), "b": np.ones(3)}
    b = {"w": np.full((2, 2), 0.5), "b": np.ones(2)}
    assert max_abs_diff(a, b) == {"w": 0.5, "b": float("inf")}
    with pytest.raises(ValueError, match="different keys"):
        max_abs_diff(a, {"w": a["w"]})
    shapes = {"c.weight": (4, 3, 5, 5), "c.bias": (4,), "f.weight": (10, 4)}
    assert param_count(shapes) == 300 + 4 + 40
    assert layer_dims(shapes) == {"c": (4, 3), "f": (10, 4)}


def test_random_updates_are_noisy_leading_blocks():
    glob = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(3, np.float32)}
    (u,) = random_updates(glob, [{"w": (2, 3), "b": (2,)}], seed=0)
    assert u["w"].shape == (2, 3) and u["w"].dtype == np.float32 and u["b"].shape == (2,)
    assert 0 < np.abs(u["w"] - glob["w"][:2, :3]).max() < 1


def test_load_flower_says_what_a_checkout_must_hold(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkout of Flower's repository"):
        load_flower(tmp_path)


@pytest.mark.skipif(not os.environ.get("FLOWER_CHECKOUT"), reason="set FLOWER_CHECKOUT to run")
def test_against_flower_checkout(tmp_path):
    out = tmp_path / "report.json"
    args = ["--flower", os.environ["FLOWER_CHECKOUT"], "--models", "lenet5", "--input", "random"]
    main([*args, "--json", str(out)])
    report = json.loads(out.read_text())
    for row in report["fjord"][0]["rows"]:
        assert row["dims_equal"] and row["logits_max_abs_diff"] < 1e-5
    assert report["fjord_aggregation"][0]["max_abs_diff"] < 1e-6
    for row in report["heterofl"]["rows"]:
        assert row["shapes_equal"] and row["logits_max_abs_diff_eval"] < 1e-5
    assert report["heterofl_aggregation"]["max_abs_diff_equal_weights"] < 1e-6
