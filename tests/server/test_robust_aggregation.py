"""Tests for the robust rules of server.aggregation: per coordinate over the replies holding it."""

import numpy as np
import pytest

from server.aggregation import RULES, Rule, aggregate_nested, robust_reference

F32 = np.float32


def _loop(glob, replies, combine):
    """Per-coordinate loop: ``combine(values, weights)`` over the holders (weight > 0)."""
    out = glob.copy()
    for idx in np.ndindex(glob.shape):
        held = [
            (float(a[idx]), w)
            for a, w in replies
            if w > 0 and all(i < s for i, s in zip(idx, a.shape, strict=True))
        ]
        if held:
            out[idx] = combine([v for v, _ in held], [w for _, w in held])
    return out


def _trimmed(trim):
    def combine(values, weights):
        order = np.argsort(values, kind="stable")
        cut = int(np.floor(trim * len(values)))
        keep = order[cut : len(values) - cut]
        return np.average(np.asarray(values)[keep], weights=np.asarray(weights)[keep])

    return combine


def _nested_case(seed=0, n=7):
    rng = np.random.default_rng(seed)
    glob = rng.standard_normal((5, 4)).astype(F32)
    replies = []
    for _ in range(n):
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 5)))
        replies.append((rng.standard_normal(shape).astype(F32), float(rng.integers(1, 9))))
    replies.append((np.zeros((0, 4), F32), 3.0))  # an empty block holds nothing
    return glob, replies


@pytest.mark.parametrize("trim", [0.0, 0.1, 0.2, 0.34, 0.49])
def test_trimmed_mean_matches_a_per_coordinate_loop(trim):
    glob, replies = _nested_case()
    new = aggregate_nested(
        {"w": glob}, [({"w": a}, w) for a, w in replies], Rule("trimmed-mean", trim)
    )
    np.testing.assert_allclose(new["w"], _loop(glob, replies, _trimmed(trim)), rtol=1e-6)


def test_median_matches_a_per_coordinate_loop_and_ignores_weights():
    glob, replies = _nested_case(1)
    new = aggregate_nested({"w": glob}, [({"w": a}, w) for a, w in replies], Rule("median"))
    want = _loop(glob, replies, lambda v, w: np.median(v))
    np.testing.assert_allclose(new["w"], want, rtol=1e-6)


def test_trimmed_mean_without_trim_is_the_weighted_mean():
    glob, replies = _nested_case(2)
    packed = [({"w": a}, w) for a, w in replies]
    np.testing.assert_allclose(
        aggregate_nested({"w": glob}, packed, Rule("trimmed-mean", 0.0))["w"],
        aggregate_nested({"w": glob}, packed)["w"],
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "rule", [Rule("trimmed-mean", 0.25), Rule("median"), Rule("centered-clip")]
)
def test_a_quarter_of_sign_flipped_replies_barely_moves_a_robust_rule(rule):
    # 9 honest updates near +1, 3 attackers at -1.9: the mean lands near 0.27, a robust rule
    # near the honest value.
    rng = np.random.default_rng(3)
    glob = np.zeros(200, F32)
    honest = [(1 + 0.1 * rng.standard_normal(200)).astype(F32) for _ in range(9)]
    bad = [np.full(200, -1.9, F32) for _ in range(3)]
    replies = [({"w": a}, 10.0) for a in honest + bad]
    mean = aggregate_nested({"w": glob}, replies)["w"]
    robust = aggregate_nested({"w": glob}, replies, rule)["w"]
    assert abs(float(mean.mean()) - 0.275) < 0.05
    assert float(robust.mean()) > 0.75, (rule, float(robust.mean()))


def test_few_holders_degrade_to_what_the_docstring_says():
    # Coordinate 0: 3 holders; 1-2: 2 holders; 3: 1 holder.
    glob = np.zeros(4, F32)
    replies = [
        ({"w": np.array([1.0, 2.0, 4.0, 8.0], F32)}, 1.0),
        ({"w": np.array([3.0, 6.0, 10.0], F32)}, 3.0),
        ({"w": np.array([100.0], F32)}, 1.0),
    ]
    median = aggregate_nested({"w": glob}, replies, Rule("median"))["w"]
    assert median.tolist() == [3.0, 4.0, 7.0, 8.0]  # two holders: their mean; one: its value
    trimmed = aggregate_nested({"w": glob}, replies, Rule("trimmed-mean", 0.34))["w"]
    # floor(0.34 · 3) = 1 cut at coordinate 0; none where fewer than 3 hold it (weighted mean).
    assert trimmed.tolist() == [3.0, pytest.approx(5.0), pytest.approx(8.5), 8.0]
    clipped = aggregate_nested({"w": glob}, replies, Rule("centered-clip"))["w"]
    assert clipped[3] == 8.0  # one holder: its deviation from itself is 0


def test_centered_clip_bounds_a_far_reply_and_keeps_close_ones():
    glob = np.zeros(50, F32)
    honest = [np.full(50, v, F32) for v in (0.9, 1.0, 1.1, 1.0, 0.95)]
    far = np.full(50, 1000.0, F32)
    new = aggregate_nested(
        {"w": glob}, [({"w": a}, 1.0) for a in [*honest, far]], Rule("centered-clip", radius=1.0)
    )["w"]
    # The median is 1.0; deviations 0.1, 0, 0.1, 0, 0.05, 999: the far one is cut to the low
    # median deviation 0.05, so the result moves by at most 0.05 / 6 plus the honest spread.
    assert np.all(np.abs(new - 1.0) < 0.05)


def test_zero_weight_replies_hold_nothing_under_every_rule():
    glob = np.full(3, 7.0, F32)
    for name in RULES:
        new = aggregate_nested({"w": glob}, [({"w": np.full(3, -50.0, F32)}, 0.0)], Rule(name))
        assert new["w"].tolist() == [7.0, 7.0, 7.0], name


def test_integer_arrays_follow_the_weighted_mean_under_every_rule():
    glob = {"n": np.array([0], np.int64)}
    replies = [({"n": np.array([v], np.int64)}, 1.0) for v in (1, 2, 30)]
    for name in RULES:
        assert aggregate_nested(glob, replies, Rule(name))["n"].tolist() == [11], name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "krum"}, "aggregation must be one of mean, trimmed-mean"),
        ({"name": "trimmed-mean", "trim": 0.5}, r"trim must be in \[0, 0.5\)"),
        ({"name": "trimmed-mean", "trim": -0.1}, r"trim must be in \[0, 0.5\)"),
        ({"name": "centered-clip", "radius": 0.0}, "clip radius must be finite and > 0"),
        ({"name": "centered-clip", "radius": float("inf")}, "clip radius"),
    ],
)
def test_bad_rules_are_refused_with_what_is_allowed(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Rule(**kwargs)


def test_robust_reference_ignores_free_riders():
    honest = [0.5, 0.6, 0.7, 0.8]
    assert robust_reference([0.0] * 4 + honest) == 0.6  # low median of the non-zero ones
    assert robust_reference([1e-30] * 4 + honest) == 0.6  # near zero counts as zero
    assert robust_reference([0.0, 0.0]) == 0.0
    assert robust_reference([0.0, 0.0, 0.0, 2.0]) == 2.0  # a free-rider majority: the rest
    with pytest.raises(ValueError, match="no values"):
        robust_reference([])


def test_config_and_aggregation_list_the_same_rules():
    from maestro_common.app.config import AGGREGATIONS

    assert AGGREGATIONS == RULES


def test_centered_clip_leaves_out_a_reply_opposing_the_median_update():
    glob = {"w": np.zeros(10, F32)}
    honest = [np.linspace(0.5, 1.5, 10).astype(F32) * s for s in (0.8, 1.0, 1.2)]
    opposed = -1.9 * honest[1]  # the sign-flip attack: a small, honest-sized but reversed step
    replies = [({"w": a}, 1.0) for a in [*honest, opposed]]
    new = aggregate_nested(glob, replies, Rule("centered-clip", radius=100.0))["w"]
    # A radius this large clips nothing: the result is the mean of the three honest replies.
    np.testing.assert_allclose(new, np.mean(honest, axis=0), rtol=1e-6)
    # Where every holder was left out, the coordinate takes the reference (the median).
    only = aggregate_nested(glob, [({"w": opposed[:2]}, 1.0), *replies], Rule("centered-clip"))
    assert np.all(np.isfinite(only["w"]))


def test_centered_clip_reports_each_replys_scale():
    glob = {"w": np.zeros(10, F32)}
    honest = [np.full(10, v, F32) for v in (0.9, 1.0, 1.1, 1.0)]
    replies = [({"w": a}, 1.0) for a in [*honest, np.full(10, -1.9, F32)]]
    scales: dict[int, float] = {}
    aggregate_nested(glob, replies, Rule("centered-clip"), scales)
    assert scales[4] == 0.0  # opposed: left out
    assert scales[1] == scales[3] == 1.0 and 0 < scales[0] <= 1.0
    empty: dict[int, float] = {}
    aggregate_nested(glob, replies, Rule("median"), empty)
    assert empty == {}
