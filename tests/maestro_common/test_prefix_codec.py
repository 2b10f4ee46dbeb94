"""Tests for maestro_common.prefix (the leading-block rule), the wire codec and task builders."""

import numpy as np
import pytest
import torch

from maestro_common.budget import use_budget
from maestro_common.codec import load_arrays, model_arrays, prefix_axes
from maestro_common.config import RunConfig
from maestro_common.decompose import decompose
from maestro_common.layers import LowRankConv2d, LowRankLinear, low_rank_layers
from maestro_common.models import build_model
from maestro_common.prefix import (
    array_shapes,
    budget_dim,
    budget_shapes,
    leading_block,
    payload_nbytes,
    take_prefix,
)
from maestro_common.task import build_run_model, input_shape, resolve_device
from tests.received import model_arrays_at_budget

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----- prefix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,beta,expected",
    [
        (10, 1.0, 10),
        (10, 0.5, 5),
        (10, 0.25, 3),  # ⌈2.5⌉
        (5, 0.6, 3),  # 0.6·5 = 3.0000000000000004 must not round up to 4
        (10, 0.7, 7),  # 0.7·10 = 7.000000000000001
        (3, 0.2, 1),  # ⌈0.6⌉
        (4, 0.01, 1),  # never below 1
        (1, 0.3, 1),
        (84, 0.25, 21),
        (120, 0.2, 24),
        (7, 0.5, 4),
    ],
)
def test_budget_dim_hand_cases(size, beta, expected):
    assert budget_dim(size, beta) == expected


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.01, float("nan")])
def test_budget_dim_rejects_bad_budget(beta):
    with pytest.raises(ValueError, match="budget"):
        budget_dim(10, beta)


def test_budget_shapes_cuts_only_listed_axes():
    shapes = {"a.u": (6, 10), "a.v": (4, 10), "c.v": (10, 3, 5, 5), "bias": (6,), "w": (7, 7)}
    axes = {"a.u": (1,), "a.v": (1,), "c.v": (0,), "w": (0, 1)}
    assert budget_shapes(shapes, axes, 0.25) == {
        "a.u": (6, 3),
        "a.v": (4, 3),
        "c.v": (3, 3, 5, 5),
        "bias": (6,),
        "w": (2, 2),
    }
    assert budget_shapes(shapes, axes, 1.0) == shapes


def test_leading_block_and_take_prefix():
    a = np.arange(24).reshape(2, 3, 4)
    assert leading_block((1, 2, 3)) == (slice(0, 1), slice(0, 2), slice(0, 3))
    out = take_prefix({"a": a, "b": np.arange(5)}, {"a": (1, 2, 3), "b": (5,)})
    np.testing.assert_array_equal(out["a"], [[[0, 1, 2], [4, 5, 6]]])
    np.testing.assert_array_equal(out["b"], np.arange(5))
    assert np.shares_memory(out["a"], a)  # a view, no copy
    # Keys not asked for are left out.
    assert set(take_prefix({"a": a, "b": np.arange(5)}, {"b": (2,)})) == {"b"}


def test_take_prefix_missing_key():
    with pytest.raises(KeyError, match="'c'"):
        take_prefix({"a": np.zeros(3)}, {"a": (1,), "c": (1,)})


def test_take_prefix_works_on_torch_tensors():
    t = torch.arange(12).reshape(3, 4)
    out = take_prefix({"t": t}, {"t": (2, 1)})
    assert torch.equal(out["t"], torch.tensor([[0], [4]]))


# ----- codec ----------------------------------------------------------------------------------


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


# ----- task -----------------------------------------------------------------------------------


def test_build_run_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = model_arrays(build_run_model(RunConfig(model="lenet5", seed=1)))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = model_arrays(build_run_model(RunConfig(model="lenet5", seed=1)))
    c = model_arrays(build_run_model(RunConfig(model="lenet5", seed=2)))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.u"], c["fc1.u"])


def test_build_run_model_factored_or_dense():
    maestro = build_run_model(RunConfig(model="lenet5", rank_fraction=0.5))
    assert {n: m.rank for n, m in low_rank_layers(maestro).items()} == {
        "conv2": 8,
        "fc1": 60,
        "fc2": 42,
    }
    dense = build_run_model(RunConfig(model="lenet5", method="fedavg-all"))
    assert low_rank_layers(dense) == {}
    plain = build_model("lenet5", 10, 1, 28)
    assert set(model_arrays(dense)) == set(model_arrays(plain))


def test_decomposed_model_at_full_rank_matches_dense():
    torch.manual_seed(0)
    dense = build_model("lenet5", 10, 1, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = dense(x)
        got = decompose(dense).eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_input_shape_and_resolve_device():
    assert input_shape(RunConfig()) == (1, 28, 28)
    assert input_shape(RunConfig(dataset="cifar10")) == (3, 32, 32)
    assert resolve_device(RunConfig(device="cpu")) == torch.device("cpu")
    auto = resolve_device(RunConfig(device="auto"))
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device(RunConfig(device="cuda"))
