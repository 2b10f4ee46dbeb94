"""Replies to index-set sub-models: validation against the indices sent, the update cap and
coordinate-wise aggregation at those indices (multipliers divided out)."""

import numpy as np
import pytest

from maestro_common.ml.index_sets import SubModel, prefix_sub_model, take_sub_model
from server.aggregation import Rule, aggregate_nested
from server.influence import clip_updates, update_rms
from server.validation import InvalidReply, Reply, filter_valid, validate_reply

F32 = np.float32
GLOBAL = {
    "w": np.arange(6 * 3, dtype=F32).reshape(6, 3),
    "b": np.zeros(6, dtype=F32),
}


def window(rows, scale=None) -> SubModel:
    """Rows ``rows`` of w and b (every column of w), optionally scaled per row."""
    rows = np.asarray(rows)
    scales = {} if scale is None else {"w": {0: np.asarray(scale, float)}}
    return SubModel(
        {"w": (rows.size, 3), "b": (rows.size,)}, {"w": {0: rows}, "b": {0: rows}}, scales
    )


def test_a_reply_must_hold_exactly_the_indices_sent():
    sent = window([4, 5, 0])
    good = take_sub_model(GLOBAL, sent)
    validate_reply(GLOBAL, good, 10, sent=sent)
    short = {"w": good["w"][:2], "b": good["b"][:2]}
    with pytest.raises(InvalidReply, match="'b': axis 0 holds 2 entries, but the node was sent 3"):
        validate_reply(GLOBAL, short, 10, sent=sent)
    with pytest.raises(InvalidReply, match="larger than the node's budget"):
        validate_reply(GLOBAL, {"w": np.ones((4, 3), F32), "b": np.ones(4, F32)}, 10, sent=sent)
    # A leading-block axis may still come back shorter (the prefix rule).
    prefix = prefix_sub_model({"w": (3, 3), "b": (3,)})
    validate_reply(GLOBAL, {"w": np.ones((2, 3), F32), "b": np.ones(2, F32)}, 10, sent=prefix)


def test_filter_valid_checks_each_reply_against_its_own_node():
    a, b = window([0, 1]), window([3, 4, 5])
    reply_a = take_sub_model(GLOBAL, a)
    accepted, rejected = filter_valid(
        GLOBAL, [Reply(1, reply_a, 5, sent=a), Reply(2, reply_a, 5, sent=b)]
    )
    assert [r.node_id for r in accepted] == [1]
    assert rejected[0][0] == 2 and "sent 3 indices" in rejected[0][1]


def test_a_sent_sub_model_that_breaks_the_global_model_is_a_server_bug():
    bad = window([0, 9])
    reply = {"w": np.ones((2, 3), F32), "b": np.ones(2, F32)}
    with pytest.raises(ValueError, match="outside") as info:
        validate_reply(GLOBAL, reply, 1, sent=bad)
    assert not isinstance(info.value, InvalidReply)


def test_each_coordinate_is_averaged_over_the_replies_that_held_it():
    a, b = window([4, 5, 0]), window([0, 1])  # a wrapped window and a leading one
    ra = {"w": np.full((3, 3), 10, F32), "b": np.array([1, 2, 3], F32)}
    rb = {"w": np.full((2, 3), 40, F32), "b": np.array([7, 9], F32)}
    new = aggregate_nested(GLOBAL, [(ra, 1.0), (rb, 3.0)], subs=[a, b])
    w = new["w"]
    np.testing.assert_array_equal(w[0], [32.5] * 3)  # (10 + 3·40) / 4: both held row 0
    np.testing.assert_array_equal(w[1], [40] * 3)  # only b
    np.testing.assert_array_equal(w[4], [10] * 3)  # only a
    np.testing.assert_array_equal(w[2:4], GLOBAL["w"][2:4])  # nobody: unchanged
    np.testing.assert_array_equal(new["b"], [(3 + 3 * 7) / 4, 9, 0, 0, 1, 2])


def test_multipliers_are_divided_out_before_averaging():
    sent = window([2, 3], scale=[2.0, 4.0])
    # A node that trained nothing returns what it got: the global model is a fixed point.
    unchanged = aggregate_nested(GLOBAL, [(take_sub_model(GLOBAL, sent), 1.0)], subs=[sent])
    for key in GLOBAL:
        np.testing.assert_allclose(unchanged[key], GLOBAL[key], rtol=1e-6)
    reply = {"w": np.array([[2, 2, 2], [8, 8, 8]], F32), "b": np.array([5, 6], F32)}
    new = aggregate_nested(GLOBAL, [(reply, 1.0)], subs=[sent])
    np.testing.assert_allclose(new["w"][2:4], [[1, 1, 1], [2, 2, 2]])  # 2/2, 8/4
    np.testing.assert_array_equal(new["b"][2:4], [5, 6])  # b was sent unscaled


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "centered-clip"])
def test_robust_rules_use_the_same_holders(rule):
    a, b, c = window([5, 0]), window([0, 1]), window([0, 5])
    replies = [
        ({"w": np.full((2, 3), v, F32), "b": np.zeros(2, F32)}, 1.0) for v in (1.0, 2.0, 3.0)
    ]
    new = aggregate_nested(GLOBAL, replies, Rule(rule), subs=[a, b, c])
    np.testing.assert_array_equal(new["w"][2:5], GLOBAL["w"][2:5])  # held by nobody
    assert new["w"][1, 0] == 2.0  # held by b alone: its value under every rule
    assert 1.0 <= new["w"][0, 0] <= 3.0


def test_the_update_cap_measures_updates_at_the_indices_sent():
    sent = window([3, 4], scale=[2.0, 2.0])
    back = take_sub_model(GLOBAL, sent)
    assert update_rms(GLOBAL, back, sent) == pytest.approx(0.0, abs=1e-6)
    moved = {"w": back["w"] + 2.0, "b": back["b"] + 1.0}
    # w moves by 2 in sent units, 1 in global units; b by 1: RMS 1 in global units.
    assert update_rms(GLOBAL, moved, sent) == pytest.approx(1.0)
    small = {"w": back["w"] + 0.2, "b": back["b"] + 0.1}
    out, scales = clip_updates(GLOBAL, [small, small, moved], 1.0, [sent, sent, sent])
    assert scales[:2] == [1.0, 1.0] and scales[2] == pytest.approx(0.1, rel=1e-5)
    np.testing.assert_allclose(out[2]["w"], back["w"] + 0.2, rtol=1e-6)
