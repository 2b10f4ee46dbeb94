"""Tests for server.replies: the per-tier means of evaluate replies (the reading of replies is
tested through the strategy, tests/server/test_strategy_replies.py)."""

import pytest

from maestro_common.app.protocol import EvalReply
from server.replies import tier_means


def test_tier_means_weight_each_row_and_put_off_tier_last():
    accepted = [
        (1, EvalReply(num_examples=10, loss=1.0, accuracy=0.5)),
        (2, EvalReply(num_examples=30, loss=3.0, accuracy=0.9)),
        (3, EvalReply(num_examples=5, loss=2.0, accuracy=0.1)),
        (4, EvalReply(num_examples=5, loss=0.5, accuracy=0.7)),
    ]
    labels = {1: "1", 2: "1", 3: "off-tier", 4: "0.25"}
    rows = tier_means(accepted, [1.0, 3.0, 2.0, 4.0], labels.__getitem__)
    assert list(rows) == ["0.25", "1", "off-tier"]
    assert rows["1"]["accuracy"] == pytest.approx((0.5 + 3 * 0.9) / 4)
    assert rows["1"]["loss"] == pytest.approx((1.0 + 3 * 3.0) / 4)
    assert rows["1"]["num-examples"] == 4.0  # the weights' sum, not the claims'
    assert rows["off-tier"] == {"accuracy": 0.1, "loss": 2.0, "num-examples": 2.0}
    assert tier_means([], [], labels.__getitem__) == {}
