"""Tests for maestro_common.app.protocol: encode/decode round trips and every reply contract."""

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from maestro_common.app import protocol as P

pytestmark = pytest.mark.usefixtures("task_identity")

ARRAYS = {"fc.u": np.arange(6, dtype=np.float32).reshape(3, 2), "fc.bias": np.ones(3, np.float32)}


def _instruction(message_type=MessageType.TRAIN, **extra) -> Message:
    content = P.encode_instruction(ARRAYS, 3, 0.5, 0.25, {P.BUDGET_GRID: [0.25, 1.0], **extra})
    return Message(content, dst_node_id=7, message_type=message_type)


def _reply(content: RecordDict, message_type=MessageType.TRAIN) -> Message:
    return Message(content, reply_to=_instruction(message_type))


# ----- instructions -----------------------------------------------------------------------


def test_instruction_round_trip():
    task = P.decode_instruction(_instruction(extra=1))
    assert (task.server_round, task.rank_fraction, task.budget) == (3, 0.5, 0.25)
    assert task.budget_grid == (0.25, 1.0)
    assert set(task.arrays) == set(ARRAYS)
    for key, arr in ARRAYS.items():
        np.testing.assert_array_equal(task.arrays[key], arr)


@pytest.mark.parametrize(
    "key,value,match",
    [
        (P.SERVER_ROUND, 0, "server-round"),
        (P.RANK_FRACTION, 1.5, "rank-fraction"),
        (P.BUDGET, -1.0, "budget"),
        (P.BUDGET, "x", "'budget' must be a finite number"),
        (P.BUDGET_GRID, [0.5, math.nan], "budget-grid"),
    ],
)
def test_malformed_instruction_raises_protocol_error(key, value, match):
    msg = _instruction()
    msg.content[P.CONFIG][key] = value
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_instruction(msg)


def test_instruction_without_arrays_raises_protocol_error():
    msg = Message(RecordDict({P.CONFIG: ConfigRecord({})}), dst_node_id=7, message_type="train")
    with pytest.raises(P.ProtocolError, match="no 'arrays' record"):
        P.decode_instruction(msg)


# ----- query replies ----------------------------------------------------------------------


def test_tier_reply_round_trip():
    reply = _reply(P.encode_tier_reply(0.4, 1, 5), MessageType.QUERY)
    assert P.decode_tier_reply(reply) == P.TierReply(0.4, 1, 5)
    unset = _reply(P.encode_tier_reply(0.3, None, None), MessageType.QUERY)
    assert P.decode_tier_reply(unset) == P.TierReply(0.3, None, None)


@pytest.mark.parametrize(
    "change,match",
    [
        ({P.RANK_FRACTION: 5.0}, "rank-fraction must be in"),
        ({P.RANK_FRACTION: math.nan}, "finite"),
        ({P.RANK_FRACTION: 0.0}, "rank-fraction must be in"),
        ({P.RANK_FRACTION: "0.5"}, "finite number"),
        ({P.TIER: None}, "missing 'tier'"),
        ({P.TIER: 1.5}, "'tier' must be an integer"),
        ({P.TIER: True}, "'tier' must be an integer"),
        ({P.PARTITION_ID: -7}, "'partition-id' must be an integer"),
    ],
)
def test_bad_tier_reply_is_rejected_not_raised(change, match):
    info = {P.RANK_FRACTION: 0.5, P.TIER: 0, P.PARTITION_ID: 0}
    info.update(change)
    info = {k: v for k, v in info.items() if v is not None}
    outcome = P.decode_tier_reply(_reply(RecordDict({P.CONFIG: ConfigRecord(info)}), "query"))
    assert isinstance(outcome, P.Rejected)
    assert match in outcome.reason


# ----- train replies ----------------------------------------------------------------------


def _train_reply(**metrics) -> Message:
    content = P.encode_train_reply(ARRAYS, 12, 0.7, {P.TRAIN_SECONDS: 1.5})
    for key, value in metrics.items():
        if value is None:
            del content[P.METRICS][key]
        else:
            content[P.METRICS][key] = value
    return _reply(content)


def test_train_reply_round_trip():
    reply = P.decode_train_reply(_train_reply())
    assert isinstance(reply, P.TrainReply)
    assert (reply.num_examples, reply.train_loss) == (12.0, 0.7)
    assert reply.metrics == {P.NUM_EXAMPLES: 12.0, P.TRAIN_LOSS: 0.7, P.TRAIN_SECONDS: 1.5}
    np.testing.assert_array_equal(reply.arrays["fc.u"], ARRAYS["fc.u"])


@pytest.mark.parametrize(
    "metrics,match",
    [
        ({P.NUM_EXAMPLES: None}, "missing 'num-examples'"),
        ({P.NUM_EXAMPLES: 0}, "num-examples must be in"),
        ({P.NUM_EXAMPLES: 2e9}, "num-examples must be in"),
        ({P.NUM_EXAMPLES: math.inf}, "finite"),
        ({P.TRAIN_LOSS: None}, "missing 'train-loss'"),
        ({P.TRAIN_LOSS: math.nan}, "'train-loss' must be a finite number"),
        ({P.TRAIN_SECONDS: [1.0, 2.0]}, "'train-seconds' must be a finite number"),
        ({"peak-rss-mb": -math.inf}, "'peak-rss-mb' must be a finite number"),
    ],
)
def test_bad_train_reply_is_rejected_not_raised(metrics, match):
    outcome = P.decode_train_reply(_train_reply(**metrics))
    assert isinstance(outcome, P.Rejected)
    assert match in outcome.reason


def test_train_reply_without_records_or_with_an_error_is_rejected():
    no_arrays = _reply(
        RecordDict({P.METRICS: MetricRecord({P.NUM_EXAMPLES: 1, "train-loss": 1.0})})
    )
    assert "no 'arrays' record" in P.decode_train_reply(no_arrays).reason
    assert "no 'metrics' record" in P.decode_train_reply(_reply(RecordDict({}))).reason
    failed = Message(Error(code=0, reason="boom"), reply_to=_instruction())
    assert P.decode_train_reply(failed) == P.Rejected("client error: boom")


def test_a_record_of_the_wrong_kind_is_rejected_not_raised():
    # A ConfigRecord where the arrays belong: whatever breaks inside the decoder is a rejection.
    content = P.encode_train_reply(ARRAYS, 12, 0.7)
    content[P.ARRAYS] = ConfigRecord({"fc.u": 1.0})
    outcome = P.decode_train_reply(_reply(content))
    assert isinstance(outcome, P.Rejected) and outcome.reason


# ----- evaluate replies -------------------------------------------------------------------


def test_eval_reply_round_trip():
    reply = _reply(P.encode_eval_reply(40, 0.5, 0.75), MessageType.EVALUATE)
    assert P.decode_eval_reply(reply) == P.EvalReply(40.0, 0.5, 0.75)


@pytest.mark.parametrize(
    "key,value,match",
    [
        (P.EVAL_ACCURACY, None, "missing 'eval-accuracy'"),
        (P.EVAL_ACCURACY, 1e6, "eval-accuracy must be in [0, 1]"),
        (P.EVAL_ACCURACY, math.nan, "finite"),
        (P.EVAL_LOSS, -1.0, "eval-loss must be ≥ 0"),
        (P.NUM_EXAMPLES, -3, "num-examples must be in"),
    ],
)
def test_bad_eval_reply_is_rejected_not_raised(key, value, match):
    content = P.encode_eval_reply(40, 0.5, 0.75)
    if value is None:
        del content[P.METRICS][key]
    else:
        content[P.METRICS][key] = value
    outcome = P.decode_eval_reply(_reply(content, MessageType.EVALUATE))
    assert isinstance(outcome, P.Rejected)
    assert match in outcome.reason
