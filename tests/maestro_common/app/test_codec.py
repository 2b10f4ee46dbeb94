"""Tests for the wire codec (maestro_common.app.codec)."""

import numpy as np
import pytest
import torch

from maestro_common.app.codec import load_arrays, model_arrays, prefix_axes
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model, input_shape
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.layers import LowRankConv2d, LowRankLinear, low_rank_layers
from maestro_common.ml.prefix import array_shapes, budget_dim, payload_nbytes
from tests.received import model_arrays_at_budget


class Small(torch.nn.Module):
    """A conv and a linear factored layer, with a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = LowRankConv2d(2, 6, 3, padding=1)  # max rank min(6, 18) = 6
        self.fc = LowRankLinear(6 * 4 * 4, 8)  # max rank 8
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(torch.relu(self.fc(h.flatten(1))))


def _small(seed: int) -> Small:
    torch.manual_seed(seed)
    return Small()


def _lenet(seed: int = 0) -> torch.nn.Module:
    return build_run_model(RunConfig(model="lenet5", seed=seed))


def test_prefix_axes_of_lenet5():
    assert prefix_axes(_lenet()) == {
        "conv2.v": (0,),
        "conv2.u": (1,),
        "fc1.u": (1,),
        "fc1.v": (1,),
        "fc2.u": (1,),
        "fc2.v": (1,),
    }


@pytest.mark.parametrize("beta", [0.1, 0.25, 0.5, 1.0])
def test_model_arrays_at_budget_equals_hand_slicing(beta):
    model = _small(0)
    full = model_arrays(model)
    out = model_arrays_at_budget(model, beta)
    kc, kf = budget_dim(6, beta), budget_dim(8, beta)
    assert set(out) == set(full)
    np.testing.assert_array_equal(out["conv.v"], full["conv.v"][:kc])  # (R, in, kh, kw) axis 0
    np.testing.assert_array_equal(out["conv.u"], full["conv.u"][:, :kc])  # (out, R) axis 1
    np.testing.assert_array_equal(out["fc.u"], full["fc.u"][:, :kf])  # (out, R) axis 1
    np.testing.assert_array_equal(out["fc.v"], full["fc.v"][:, :kf])  # (in, R) axis 1
    assert out["conv.v"].shape == (kc, 2, 3, 3) and out["conv.u"].shape == (6, kc)
    assert out["fc.u"].shape == (8, kf) and out["fc.v"].shape == (96, kf)
    for key in ("conv.bias", "fc.bias", "head.weight", "head.bias"):
        np.testing.assert_array_equal(out[key], full[key])


def test_model_arrays_at_budget_on_lenet5_hand_slicing():
    model = _lenet()
    full = model_arrays(model)
    out = model_arrays_at_budget(model, 0.25)
    np.testing.assert_array_equal(out["conv2.v"], full["conv2.v"][:4])
    np.testing.assert_array_equal(out["conv2.u"], full["conv2.u"][:, :4])
    np.testing.assert_array_equal(out["fc1.u"], full["fc1.u"][:, :30])
    np.testing.assert_array_equal(out["fc1.v"], full["fc1.v"][:, :30])
    np.testing.assert_array_equal(out["fc2.u"], full["fc2.u"][:, :21])
    np.testing.assert_array_equal(out["fc2.v"], full["fc2.v"][:, :21])
    np.testing.assert_array_equal(out["conv1.weight"], full["conv1.weight"])
    np.testing.assert_array_equal(out["fc3.weight"], full["fc3.weight"])
    assert payload_nbytes(out) < payload_nbytes(full) / 2
    assert payload_nbytes(out) == sum(a.size * 4 for a in out.values())


def test_model_arrays_copies():
    model = _small(0)
    arrays = model_arrays(model)
    arrays["fc.u"][:] = 0
    assert model.fc.u.abs().sum() > 0


@pytest.mark.parametrize("beta", [0.2, 0.5, 1.0])
def test_load_arrays_small_model_matches_budget_forward(beta):
    original = _small(0)
    fresh = _small(1)
    load_arrays(fresh, model_arrays_at_budget(original, beta))
    assert fresh.conv.rank == budget_dim(6, beta)
    assert fresh.fc.rank == budget_dim(8, beta)
    x = torch.randn(5, 2, 4, 4)
    with torch.no_grad(), use_budget(original, beta):
        expected = original(x)
    with torch.no_grad():
        got = fresh(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.25, 0.6])
def test_load_arrays_lenet5_resizes_and_matches_budget_forward(beta):
    original = _lenet(seed=0)
    fresh = build_run_model(RunConfig(model="lenet5", seed=9))  # other values, full rank
    assert not torch.equal(fresh.fc1.u, original.fc1.u)
    load_arrays(fresh, model_arrays_at_budget(original, beta))
    ranks = {n: m.rank for n, m in low_rank_layers(fresh).items()}
    assert ranks == {
        "conv2": budget_dim(16, beta),
        "fc1": budget_dim(120, beta),
        "fc2": budget_dim(84, beta),
    }
    x = torch.randn(4, *input_shape(RunConfig(model="lenet5")))
    original.eval()
    fresh.eval()
    with torch.no_grad(), use_budget(original, beta):
        expected = original(x)
    with torch.no_grad():
        got = fresh(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_load_arrays_grows_back_to_a_larger_rank():
    model = _small(0)
    load_arrays(model, model_arrays_at_budget(_small(2), 0.2))
    assert model.fc.rank == 2
    load_arrays(model, model_arrays(_small(3)))
    assert model.fc.rank == 8
    np.testing.assert_array_equal(model_arrays(model)["fc.u"], model_arrays(_small(3))["fc.u"])


def test_load_arrays_missing_key():
    arrays = model_arrays(_small(0))
    del arrays["head.bias"]
    with pytest.raises(ValueError, match=r"missing \['head.bias'\]"):
        load_arrays(_small(1), arrays)


def test_load_arrays_unknown_key():
    arrays = model_arrays(_small(0))
    arrays["extra.w"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"unknown \['extra.w'\]"):
        load_arrays(_small(1), arrays)


def test_load_arrays_rank_beyond_max():
    arrays = model_arrays(_small(0))
    arrays["fc.u"] = np.zeros((8, 9), dtype=np.float32)  # max rank of fc is 8
    arrays["fc.v"] = np.zeros((96, 9), dtype=np.float32)
    with pytest.raises(ValueError, match=r"fc\.u.*1\.\.8"):
        load_arrays(_small(1), arrays)


def test_load_arrays_zero_rank():
    arrays = model_arrays(_small(0))
    arrays["conv.u"] = np.zeros((6, 0), dtype=np.float32)
    arrays["conv.v"] = np.zeros((0, 2, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"conv\.u"):
        load_arrays(_small(1), arrays)


def test_load_arrays_wrong_non_rank_shape():
    arrays = model_arrays(_small(0))
    arrays["head.weight"] = np.zeros((3, 9), dtype=np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        load_arrays(_small(1), arrays)


def test_load_arrays_mismatched_u_v_ranks():
    arrays = model_arrays(_small(0))
    arrays["fc.v"] = arrays["fc.v"][:, :3]  # u keeps rank 8
    with pytest.raises(ValueError):
        load_arrays(_small(1), arrays)


def test_array_shapes():
    assert array_shapes({"a": np.zeros((2, 3)), "b": np.zeros(4)}) == {"a": (2, 3), "b": (4,)}
