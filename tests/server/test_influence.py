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
