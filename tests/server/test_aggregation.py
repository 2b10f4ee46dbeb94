"""Tests for server.aggregation: nested weighted mean over leading blocks."""

import copy

import numpy as np
import pytest

from maestro_common.ml.prefix import leading_block
from server.aggregation import aggregate_nested

F32 = np.float32


def _reference(global_arrays, replies):
    """Per-coordinate loop spelling out the prefix rule (docs/architecture.md), for comparison."""
    out = {}
    for key, glob in global_arrays.items():
        new = glob.copy()
        for idx in np.ndindex(glob.shape):
            num = den = 0.0
            for arrays, w in replies:
                arr = arrays.get(key)
                if arr is not None and all(i < a for i, a in zip(idx, arr.shape, strict=True)):
                    num += w * float(arr[idx])
                    den += w
            if den > 0:
                new[idx] = num / den
        out[key] = new
    return out


def _random_case(rng, shapes, n_replies, dtype=np.float32):
    glob = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    replies = []
    for _ in range(n_replies):
        arrays = {}
        for k, s in shapes.items():
            if rng.random() < 0.15:  # some replies leave a key out
                continue
            block = tuple(int(rng.integers(0, g + 1)) for g in s)
            arrays[k] = rng.standard_normal(block).astype(dtype)
        replies.append((arrays, float(rng.integers(1, 50))))
    return glob, replies


def test_hand_computed_2d():
    glob = {"w": -np.arange(1, 13, dtype=F32).reshape(3, 4)}
    replies = [
        ({"w": np.array([[1, 2], [3, 4], [5, 6]], dtype=F32)}, 1.0),  # block (3, 2)
        ({"w": np.array([[10, 20, 30], [40, 50, 60]], dtype=F32)}, 3.0),  # block (2, 3)
        ({"w": np.array([[100]], dtype=F32)}, 4.0),  # block (1, 1)
    ]
    expected = np.array(
        [
            [53.875, 15.5, 30.0, -4.0],  # (1 + 3*10 + 4*100) / 8, (2 + 3*20) / 4, 30
            [30.75, 38.5, 60.0, -8.0],  # (3 + 3*40) / 4, (4 + 3*50) / 4, 60
            [5.0, 6.0, -11.0, -12.0],  # reply 1 only; then uncovered
        ],
        dtype=F32,
    )
    out = aggregate_nested(glob, replies)
    np.testing.assert_array_equal(out["w"], expected)
    assert out["w"].dtype == F32


def test_hand_computed_4d():
    glob = {"conv": -np.arange(1, 17, dtype=F32).reshape(2, 2, 2, 2)}
    replies = [
        ({"conv": np.full((2, 1, 2, 2), 1.0, dtype=F32)}, 1.0),
        ({"conv": np.full((1, 2, 2, 2), 5.0, dtype=F32)}, 1.0),
        ({"conv": np.full((1, 1, 2, 1), 9.0, dtype=F32)}, 2.0),
    ]
    expected = np.array(
        [
            [
                [
                    [6.0, 3.0],
                    [6.0, 3.0],
                ],  # [0, 0]: (1 + 5 + 2*9) / 4 where l == 0, else (1 + 5) / 2
                [[5.0, 5.0], [5.0, 5.0]],  # [0, 1]: reply 2 only
            ],
            [
                [[1.0, 1.0], [1.0, 1.0]],  # [1, 0]: reply 1 only
                [[-13.0, -14.0], [-15.0, -16.0]],  # [1, 1]: uncovered
            ],
        ],
        dtype=F32,
    )
    out = aggregate_nested(glob, replies)
    np.testing.assert_array_equal(out["conv"], expected)


@pytest.mark.parametrize("seed", range(8))
def test_matches_per_coordinate_reference(seed):
    rng = np.random.default_rng(seed)
    shapes = {"a": (5,), "b": (4, 3), "c": (3, 2, 3, 2), "s": ()}
    glob, replies = _random_case(rng, shapes, n_replies=int(rng.integers(1, 6)), dtype=np.float64)
    out, ref = aggregate_nested(glob, replies), _reference(glob, replies)
    for k in shapes:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_uncovered_coordinates_keep_their_bits(seed):
    rng = np.random.default_rng(100 + seed)
    shapes = {"u": (6, 5), "v": (4, 3, 3, 3)}
    glob, replies = _random_case(rng, shapes, n_replies=3)
    out = aggregate_nested(glob, replies)
    for k, s in shapes.items():
        covered = np.zeros(s, dtype=bool)
        for arrays, _ in replies:
            if k in arrays:
                covered[leading_block(arrays[k].shape)] = True
        assert out[k][~covered].tobytes() == glob[k][~covered].tobytes()


@pytest.mark.parametrize("seed", range(5))
def test_weight_is_num_examples(seed):
    rng = np.random.default_rng(200 + seed)
    glob, replies = _random_case(rng, {"w": (5, 4), "b": (5,)}, n_replies=3)
    heavy = [(replies[0][0], 3.0), *replies[1:]]
    repeated = [(replies[0][0], 1.0)] * 3 + list(replies[1:])
    light = [(replies[0][0], 1.0), *replies[1:]]
    replies_3 = aggregate_nested(glob, heavy)
    replies_1 = aggregate_nested(glob, repeated)
    for k in glob:
        np.testing.assert_allclose(replies_3[k], replies_1[k], rtol=1e-6)
    # Scaling every weight by the same factor changes nothing.
    scaled = aggregate_nested(glob, [(a, 7.0 * w) for a, w in light])
    unscaled = aggregate_nested(glob, light)
    for k in glob:
        np.testing.assert_allclose(scaled[k], unscaled[k], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_full_size_replies_reduce_to_fedavg(dtype, seed):
    rng = np.random.default_rng(300 + seed)
    shapes = {"w": (4, 3), "conv": (2, 3, 3, 3), "bias": (4,)}
    glob = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    weights = [float(w) for w in rng.integers(1, 100, size=5)]
    replies = [
        ({k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}, w) for w in weights
    ]
    out = aggregate_nested(glob, replies)
    for k in shapes:
        stacked = np.stack([arrays[k] for arrays, _ in replies])
        fedavg = np.average(stacked, axis=0, weights=weights).astype(dtype)
        np.testing.assert_array_equal(out[k], fedavg)


def test_inputs_not_mutated_and_outputs_are_new():
    rng = np.random.default_rng(7)
    glob, replies = _random_case(rng, {"w": (4, 4), "b": (4,)}, n_replies=4)
    glob_before, replies_before = copy.deepcopy(glob), copy.deepcopy(replies)
    out = aggregate_nested(glob, replies)
    for k in glob:
        np.testing.assert_array_equal(glob[k], glob_before[k])
        assert not np.shares_memory(out[k], glob[k])
        for arrays, _ in replies:
            if k in arrays:
                assert not np.shares_memory(out[k], arrays[k])
    for (arrays, w), (arrays0, w0) in zip(replies, replies_before, strict=True):
        assert w == w0 and arrays.keys() == arrays0.keys()
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], arrays0[k])


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8]
)
def test_dtype_and_shape_preserved(dtype):
    glob = {"x": np.arange(12).reshape(3, 4).astype(dtype)}
    replies = [
        ({"x": np.ones((2, 2), dtype=dtype)}, 2.0),
        ({"x": np.zeros((3, 1), dtype=dtype)}, 1.0),
    ]
    out = aggregate_nested(glob, replies)
    assert out["x"].dtype == np.dtype(dtype) and out["x"].shape == (3, 4)


def test_integer_arrays_use_rounded_weighted_mean():
    glob = {"c": np.array([10, 20, 30], dtype=np.int64), "n": np.array(100, dtype=np.int64)}
    replies = [
        ({"c": np.array([1, 2], dtype=np.int64), "n": np.array(7, dtype=np.int64)}, 1.0),
        ({"c": np.array([4], dtype=np.int64), "n": np.array(8, dtype=np.int64)}, 2.0),
    ]
    out = aggregate_nested(glob, replies)
    np.testing.assert_array_equal(out["c"], [3, 2, 30])  # (1 + 2*4) / 3, 2, uncovered
    assert out["n"] == 8 and out["n"].shape == ()  # (7 + 2*8) / 3 = 7.67 -> 8
    # Ties round half to even, as np.rint does.
    halves = aggregate_nested(
        {"c": np.zeros(2, dtype=np.int64)},
        [
            ({"c": np.array([1, 2], dtype=np.int64)}, 1.0),
            ({"c": np.array([2, 3], dtype=np.int64)}, 1.0),
        ],
    )
    np.testing.assert_array_equal(halves["c"], [2, 2])


def test_bool_arrays():
    glob = {"m": np.array([True, True, False])}
    replies = [({"m": np.array([False, True])}, 3.0), ({"m": np.array([True, False])}, 1.0)]
    out = aggregate_nested(glob, replies)
    np.testing.assert_array_equal(out["m"], [False, True, False])


def test_absent_key_and_empty_replies():
    glob = {"w": np.ones((2, 2), dtype=F32), "b": np.full(2, 5.0, dtype=F32)}
    out = aggregate_nested(glob, [({"w": np.zeros((2, 2), dtype=F32)}, 1.0)])
    np.testing.assert_array_equal(out["w"], np.zeros((2, 2)))
    np.testing.assert_array_equal(out["b"], glob["b"])
    assert out["b"] is not glob["b"]
    empty = aggregate_nested(glob, [])
    for k in glob:
        assert empty[k].tobytes() == glob[k].tobytes() and empty[k] is not glob[k]


def test_zero_weight_reply_changes_nothing():
    glob = {"w": np.arange(4, dtype=F32)}
    out = aggregate_nested(glob, [({"w": np.full(4, 99.0, dtype=F32)}, 0.0)])
    np.testing.assert_array_equal(out["w"], glob["w"])


@pytest.mark.parametrize(
    ("reply", "weight", "match"),
    [
        ({"zzz": np.ones(2)}, 1.0, "not in the global model"),
        ({"w": np.ones(3)}, 1.0, "not a leading block"),  # one axis instead of two
        ({"w": np.ones((3, 4))}, 1.0, "not a leading block"),  # larger than global
        ({"w": np.ones((1, 1))}, -1.0, "weight"),
        ({"w": np.ones((1, 1))}, float("nan"), "weight"),
    ],
)
def test_structural_errors_raise(reply, weight, match):
    glob = {"w": np.zeros((2, 3))}
    with pytest.raises(ValueError, match=match):
        aggregate_nested(glob, [(reply, weight)])
