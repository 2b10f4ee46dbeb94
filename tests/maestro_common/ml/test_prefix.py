"""Tests for maestro_common.ml.prefix: the leading-block rule."""

import numpy as np
import pytest
import torch

from maestro_common.ml.prefix import (
    budget_dim,
    budget_shapes,
    leading_block,
    quantize_rank,
    take_prefix,
)


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


def test_quantize_rank_rounds_down_to_whole_quanta_and_keeps_a_cap_below_one():
    assert quantize_rank(65, 16) == 64
    assert quantize_rank(64, 16) == 64
    assert quantize_rank(15, 16) == 15
    assert quantize_rank(1, 8) == 1
    assert quantize_rank(7, 1) == 7


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_quantum_rejected(bad):
    with pytest.raises(ValueError, match="quantum must be an int"):
        quantize_rank(5, bad)
