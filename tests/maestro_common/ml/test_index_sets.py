"""Sub-models as index sets: placement, gathering (the codec's slicing), multipliers, checks."""

import numpy as np
import pytest

from maestro_common.ml.index_sets import (
    SubModel,
    prefix_sub_model,
    read_reply,
    take_sub_model,
)
from maestro_common.ml.prefix import take_prefix

ARRAYS = {
    "w": np.arange(5 * 4, dtype=np.float32).reshape(5, 4),
    "b": np.arange(5, dtype=np.float32),
}
SHAPES = {"w": (5, 4), "b": (5,)}


def test_prefix_sub_model_is_the_leading_block_fast_path():
    sub = prefix_sub_model({"w": (2, 3), "b": (2,)})
    assert sub.is_prefix
    got = take_sub_model(ARRAYS, sub)
    want = take_prefix(ARRAYS, {"w": (2, 3), "b": (2,)})
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
        assert np.shares_memory(got[key], ARRAYS[key])  # views, as take_prefix gives


def test_take_sub_model_gathers_the_indices_in_their_order():
    rows = np.array([4, 0])  # a window that wrapped around: rows 4 then 0
    sub = SubModel({"w": (2, 3), "b": (2,)}, {"w": {0: rows}, "b": {0: rows}}).check(SHAPES)
    got = take_sub_model(ARRAYS, sub)
    np.testing.assert_array_equal(got["w"], ARRAYS["w"][[4, 0]][:, :3])
    np.testing.assert_array_equal(got["b"], [4.0, 0.0])
    assert got["w"].dtype == np.float32 and got["w"].shape == (2, 3)


def test_multipliers_scale_what_is_sent_and_are_divided_out_of_the_reply():
    idx, scale = np.array([1, 3]), np.array([2.0, 4.0])
    sub = SubModel({"w": (5, 2)}, {"w": {1: idx}}, {"w": {1: scale}}).check(SHAPES)
    sent = take_sub_model(ARRAYS, sub)
    np.testing.assert_allclose(sent["w"], ARRAYS["w"][:, [1, 3]] * scale)
    back, where = read_reply("w", sent["w"], sub)
    np.testing.assert_allclose(back, ARRAYS["w"][where])
    np.testing.assert_allclose(back, ARRAYS["w"][:, [1, 3]])


def test_a_shorter_reply_holds_the_first_indices_sent():
    sub = SubModel({"w": (3, 4)}, {"w": {0: np.array([2, 4, 1])}})
    _, where = read_reply("w", np.zeros((2, 4), np.float32), sub)
    target = np.zeros((5, 4))
    target[where] = 1
    assert target[:, 0].tolist() == [0, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (SubModel({"x": (1,)}), "not in the global model"),
        (SubModel({"w": (6, 4)}), "does not fit"),
        (SubModel({"w": (2, 4)}, {"w": {0: np.array([1, 2, 3])}}), "3 indices for 2"),
        (SubModel({"w": (2, 4)}, {"w": {0: np.array([1, 5])}}), r"outside 0\.\.4"),
        (SubModel({"w": (2, 4)}, {"w": {0: np.array([1, 1])}}), "repeated"),
        (
            SubModel({"w": (2, 4)}, {"w": {0: np.array([0, 1])}}, {"w": {1: np.ones(4)}}),
            "no indices",
        ),
        (
            SubModel({"w": (2, 4)}, {"w": {0: np.array([0, 1])}}, {"w": {0: np.array([1.0, 0])}}),
            "finite and > 0",
        ),
    ],
)
def test_check_refuses_a_sub_model_that_does_not_fit(sub, message):
    with pytest.raises(ValueError, match=message):
        sub.check(SHAPES)
