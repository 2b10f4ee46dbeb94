"""Tests for server.influence: the caps on one reply's weight and update (unit level)."""

import numpy as np
import pytest

from server.influence import cap_weights, clip_updates, low_median, update_rms


def test_low_median_is_the_lower_middle_value():
    assert low_median([5.0]) == 5.0
    assert low_median([10.0, 1e9]) == 10.0  # two replies: the liar does not set it
    assert low_median([3.0, 1.0, 2.0]) == 2.0
    assert low_median([4.0, 1.0, 3.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="no values"):
        low_median([])


def test_cap_weights():
    assert cap_weights([10, 20, 30, 1e9], 2.0) == [10, 20, 30, 40]
    assert cap_weights([10, 20, 30, 1e9], 0.0) == [10, 20, 30, 1e9]  # off
    assert cap_weights([], 2.0) == []
    with pytest.raises(ValueError, match="≥ 0"):
        cap_weights([1.0], -1.0)


def test_clip_updates_scales_only_the_outlier_and_keeps_integers():
    glob = {"w": np.zeros((4, 4), np.float32), "n": np.array([3], np.int64)}
    honest = [{"w": np.full((4, 4), v, np.float32), "n": np.array([4])} for v in (0.1, 0.2, 0.3)]
    liar = {"w": np.full((2, 2), 100.0, np.float32), "n": np.array([9])}  # a leading block
    out, scales = clip_updates(glob, [*honest, liar], 2.0)
    assert scales[:3] == [1.0, 1.0, 1.0]
    assert out[0]["w"] is honest[0]["w"]  # untouched replies are not copied
    assert update_rms(glob, out[3]) == pytest.approx(2 * 0.2, rel=1e-6)  # 2 × the low median
    assert scales[3] == pytest.approx(0.4 / 100)
    assert out[3]["w"].shape == (2, 2) and out[3]["w"].dtype == np.float32
    assert out[3]["n"] is liar["n"]
    same, ones = clip_updates(glob, [*honest, liar], 0.0)
    assert ones == [1.0] * 4 and same[3]["w"] is liar["w"]


def test_cap_weights_floor_lifts_a_tiny_claim_to_a_share_of_the_median():
    assert cap_weights([5e-324, 10, 20, 30], 2.0, 0.01) == [0.1, 10, 20, 20]  # median 10
    assert cap_weights([5e-324, 10, 20, 30], 0.0, 0.5) == [5.0, 10, 20, 30]  # floor alone
    assert cap_weights([5e-324, 10, 20], 2.0) == [5e-324, 10, 20]  # floor off
    with pytest.raises(ValueError, match="above the weight cap"):
        cap_weights([1.0], 2.0, 3.0)
    with pytest.raises(ValueError, match="≥ 0"):
        cap_weights([1.0], 2.0, -0.1)


def test_a_tiny_claim_no_longer_zeroes_the_coordinates_only_that_node_covers():
    # The hole: the only β = 1 node claims 5e-324 examples; its weight underflowed
    # w · A to 0, so every coordinate only it covers became 0.
    from server.aggregation import aggregate_nested

    glob = {"w": np.full(8, 0.5, np.float32)}
    small = [({"w": np.full(4, 1.0, np.float32)}, n) for n in (10.0, 12.0)]
    full = ({"w": np.full(8, 2.0, np.float32)}, 5e-324)
    weights = cap_weights([n for _, n in [*small, full]], 2.0, 0.01)
    new = aggregate_nested(
        glob, [(a, w) for (a, _), w in zip([*small, full], weights, strict=True)]
    )
    assert new["w"][4:].tolist() == [2.0] * 4  # its own coordinates: its value, not 0


def test_free_riders_do_not_zero_the_update_cap():
    # Half of the replies return the model unchanged: the low median RMS is 0, which made the
    # cap 0 and scaled every honest update to nothing. The reference now ignores them.
    glob = {"w": np.zeros(16, np.float32)}
    riders = [{"w": np.zeros(16, np.float32)} for _ in range(3)]
    near = [{"w": np.full(16, 1e-12, np.float32)}]  # "unchanged" up to rounding
    honest = [{"w": np.full(16, v, np.float32)} for v in (0.1, 0.2, 0.3, 0.25)]
    out, scales = clip_updates(glob, [*riders, *near, *honest], 2.0)
    assert scales[4:] == [1.0] * 4  # honest updates pass untouched
    assert [update_rms(glob, r) for r in out[4:]] == pytest.approx([0.1, 0.2, 0.3, 0.25])
    liar = {"w": np.full(16, 50.0, np.float32)}
    _, scales = clip_updates(glob, [*riders, *honest, liar], 2.0)
    # Still bounded: the liar is cut to 2 × the low median of the non-zero RMS values (0.2..0.25).
    assert scales[-1] == pytest.approx(2 * 0.25 / 50)
