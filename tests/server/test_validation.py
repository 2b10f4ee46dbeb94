"""Tests for server.validation: every kind of bad reply is rejected with a reason."""

import re

import numpy as np
import pytest

import server.validation as validation
from server.aggregation import aggregate_nested
from server.validation import InvalidReply, Reply, filter_valid, validate_reply

F32 = np.float32


def _global():
    return {
        "fc.u": np.arange(24, dtype=F32).reshape(6, 4),
        "fc.v": np.arange(32, dtype=F32).reshape(8, 4),
        "bn.num_batches_tracked": np.array(5, dtype=np.int64),
    }


def _budget():
    return {"fc.u": (6, 2), "fc.v": (8, 2), "bn.num_batches_tracked": ()}


def _good():
    return {
        "fc.u": np.ones((6, 2), dtype=F32),
        "fc.v": np.ones((8, 2), dtype=F32),
        "bn.num_batches_tracked": np.array(9, dtype=np.int64),
    }


def _with(**changes):
    arrays = _good()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


NAN_U = np.ones((6, 2), dtype=F32)
NAN_U[3, 1] = np.nan
INF_V = np.ones((8, 2), dtype=F32)
INF_V[0, 0] = -np.inf

BAD_ARRAYS = {
    "missing-key": (_with(fc__v=None), ["missing keys", "fc.v"]),
    "unknown-key": ({**_good(), "fc.extra": np.ones(2, dtype=F32)}, ["unknown keys", "fc.extra"]),
    "fewer-axes": (_with(fc__u=np.ones(12, dtype=F32)), ["fc.u", "1 axes", "has 2"]),
    "more-axes": (_with(fc__u=np.ones((6, 2, 1), dtype=F32)), ["fc.u", "3 axes"]),
    "larger-than-global": (
        _with(fc__v=np.ones((9, 2), dtype=F32)),
        ["fc.v", "axis 0", "larger than the global 8"],
    ),
    "larger-than-budget": (
        _with(fc__u=np.ones((6, 3), dtype=F32)),
        ["fc.u", "axis 1", "budget 2"],
    ),
    "nan": (_with(fc__u=NAN_U), ["fc.u", "non-finite"]),
    "inf": (_with(fc__v=INF_V), ["fc.v", "non-finite"]),
    "int-for-float": (_with(fc__u=np.ones((6, 2), dtype=np.int32)), ["fc.u", "dtype int32"]),
    "float-for-int": (
        _with(bn__num_batches_tracked=np.array(9.0)),
        ["bn.num_batches_tracked", "dtype float64"],
    ),
    "bool-for-float": (_with(fc__u=np.ones((6, 2), dtype=bool)), ["fc.u", "dtype bool"]),
    "float64-overflows-float32": (
        _with(fc__u=np.full((6, 2), 1e300)),
        ["fc.u", "do not fit", "float32"],
    ),
    "not-an-array": (_with(fc__u=[[1.0, 1.0]] * 6), ["fc.u", "numpy array", "list"]),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_arrays_rejected_with_reason(name):
    arrays, fragments = BAD_ARRAYS[name]
    with pytest.raises(InvalidReply) as info:
        validate_reply(_global(), arrays, 100, _budget())
    for fragment in fragments:
        assert fragment in info.value.reason
    assert str(info.value) == info.value.reason
    assert isinstance(info.value, ValueError)


def test_integer_range_against_narrower_global():
    glob = {"n": np.array(0, dtype=np.int32)}
    with pytest.raises(InvalidReply, match="do not fit the global int32"):
        validate_reply(glob, {"n": np.array(2**40, dtype=np.int64)}, 1)
    validate_reply(glob, {"n": np.array(7, dtype=np.int64)}, 1)


# Below one example too: a denormal weight (5e-324) zeroed the coordinates only it covered.
BELOW_ONE = [5e-324, 1e-300, 0.5, 0.999]


@pytest.mark.parametrize(
    "num_examples",
    [
        0,
        -1,
        -0.5,
        0.0,
        float("nan"),
        float("inf"),
        True,
        False,
        "10",
        None,
        [10],
        2e9,
        10**10,
        *BELOW_ONE,
    ],
)
def test_bad_num_examples_rejected(num_examples):
    with pytest.raises(InvalidReply, match="num-examples") as info:
        validate_reply(_global(), _good(), num_examples, _budget())
    assert repr(num_examples) in info.value.reason


@pytest.mark.parametrize("num_examples", [1, 1.0, 100, 12.5, np.int64(3), np.float32(2.0), 10**9])
def test_good_num_examples_accepted(num_examples):
    validate_reply(_global(), _good(), num_examples, _budget())


def test_good_replies_accepted():
    glob = _global()
    validate_reply(glob, _good(), 10, _budget())
    # Smaller than the budget, and full size without a budget.
    validate_reply(glob, _with(fc__u=np.ones((3, 1), dtype=F32)), 10, _budget())
    validate_reply(glob, {k: v.copy() for k, v in glob.items()}, 10)
    # Float of another width for a float32 global.
    validate_reply(glob, _with(fc__u=np.ones((6, 2), dtype=np.float64)), 10, _budget())
    validate_reply(glob, _with(fc__v=np.ones((8, 2), dtype=np.float16)), 10, _budget())
    # An empty leading block is harmless.
    validate_reply(glob, _with(fc__u=np.ones((0, 2), dtype=F32)), 10, _budget())


def test_expected_keys_come_from_budget():
    glob = _global()
    budget = {"fc.u": (6, 2)}
    validate_reply(glob, {"fc.u": np.ones((6, 2), dtype=F32)}, 1, budget)
    with pytest.raises(InvalidReply, match=re.escape("unknown keys: 'fc.v'")):
        validate_reply(glob, {"fc.u": np.ones((6, 2), dtype=F32), "fc.v": glob["fc.v"]}, 1, budget)
    with pytest.raises(InvalidReply, match=re.escape("missing keys: 'bn.num_batches_tracked'")):
        validate_reply(glob, {"fc.u": glob["fc.u"], "fc.v": glob["fc.v"]}, 1)


def test_long_key_lists_are_cut():
    glob = {f"k{i}": np.zeros(1, dtype=F32) for i in range(20)}
    with pytest.raises(InvalidReply, match=r"\(20 in all\)"):
        validate_reply(glob, {}, 1)


def test_server_side_inconsistency_is_not_an_invalid_reply():
    glob = _global()
    with pytest.raises(ValueError, match="max_shapes keys") as info:
        validate_reply(glob, _good(), 1, {**_budget(), "nope": (1,)})
    assert not isinstance(info.value, InvalidReply)


def test_filter_valid_splits_and_logs(monkeypatch):
    logged = []
    monkeypatch.setattr(validation, "log", lambda level, msg, *args: logged.append(msg % args))
    glob = _global()
    replies = [
        Reply(1, _good(), 10, _budget()),
        Reply(2, _with(fc__u=NAN_U), 10, _budget()),
        Reply(0, _with(fc__u=np.ones((3, 2), dtype=F32)), 5, _budget()),
        Reply("n3", _good(), 0, _budget()),
    ]
    accepted, rejected = filter_valid(glob, replies)
    assert [r.node_id for r in accepted] == [1, 0]
    assert [node for node, _ in rejected] == [2, "n3"]
    assert "non-finite" in rejected[0][1] and "num-examples" in rejected[1][1]
    assert len(logged) == 2
    assert "node 2" in logged[0] and "non-finite" in logged[0]
    assert "node n3" in logged[1]


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_only_bad_reply_leaves_global_bit_for_bit(name):
    glob = _global()
    before = {k: v.tobytes() for k, v in glob.items()}
    arrays, _ = BAD_ARRAYS[name]
    accepted, rejected = filter_valid(glob, [Reply(7, arrays, 10, _budget())])
    assert accepted == [] and rejected[0][0] == 7
    new = aggregate_nested(glob, [(r.arrays, float(r.num_examples)) for r in accepted])
    for k, v in glob.items():
        assert new[k].dtype == v.dtype and new[k].tobytes() == before[k]


def test_bad_reply_is_left_out_of_the_average():
    glob = _global()
    good = Reply(1, _good(), 10, _budget())
    bad = Reply(2, _with(fc__u=NAN_U), 1000, _budget())
    accepted, _ = filter_valid(glob, [good, bad])
    new = aggregate_nested(glob, [(r.arrays, float(r.num_examples)) for r in accepted])
    only_good = aggregate_nested(glob, [(good.arrays, 10.0)])
    for k in glob:
        assert np.isfinite(new[k]).all()
        np.testing.assert_array_equal(new[k], only_good[k])
