"""Replies are pulled as they arrive, with a short growing wait, until all are in or time is up."""

import pytest
from flwr.app import Message, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.server.superlink.linkstate.utils import (
    NODE_UNAVAILABLE_ERROR_REASON,
    create_message_error_unavailable_res_message,
)

from server.messaging import credit_error, send_and_receive

pytestmark = pytest.mark.usefixtures("task_identity")


class SlowGrid:
    """Replies to message ``i`` become available at time ``ready[i]`` (a fake clock)."""

    def __init__(self, ready: list[float], refuse: int = 0) -> None:
        self.ready = ready
        self.refuse = refuse
        self.now = 0.0
        self.pulls: list[float] = []
        self.sleeps: list[float] = []

    def push_messages(self, messages):
        msgs = list(messages)
        ids = [f"m{i}" for i in range(len(msgs))]
        for i in range(self.refuse):
            ids[i] = None  # the SuperLink did not take it
        self.msgs = dict(zip(ids, msgs, strict=True))
        return ids

    def pull_messages(self, message_ids):
        self.pulls.append(self.now)
        out = []
        for i in message_ids:
            if self.now >= self.ready[int(i[1:])]:
                reply = Message(RecordDict(), reply_to=self._with_id(i))
                out.append(reply)
        return out

    def _with_id(self, i):
        msg = self.msgs[i]
        msg.metadata.__dict__["_message_id"] = i
        msg.metadata.__dict__["_src_node_id"] = 0
        return msg

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _msgs(n):
    return [
        Message(RecordDict(), dst_node_id=i + 1, message_type=MessageType.TRAIN) for i in range(n)
    ]


def _run(grid, n, timeout):
    return send_and_receive(grid, _msgs(n), timeout, clock=grid.clock, sleep=grid.sleep)


def test_the_phase_ends_soon_after_the_last_reply_not_on_a_3_s_boundary():
    grid = SlowGrid([2.3, 0.5, 4.05])
    replies = _run(grid, 3, timeout=60)
    # In the order sent, though m1 arrived first: sums over replies do not depend on arrival.
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert 4.05 <= grid.now <= 4.05 + 0.1  # Flower's HttpGrid would return at 6 s
    assert grid.sleeps[:3] == [0.01, 0.02, 0.04] and max(grid.sleeps) == 0.1


def test_a_missing_reply_ends_the_wait_at_the_timeout_with_the_others():
    grid = SlowGrid([0.1, float("inf")])
    replies = _run(grid, 2, timeout=5)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 5 <= grid.now <= 5.1


def test_messages_the_superlink_did_not_take_are_not_waited_for():
    grid = SlowGrid([0.0, 0.0, 0.0], refuse=1)
    replies = _run(grid, 3, timeout=None)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m1", "m2"]
    assert grid.sleeps == []


# ----- error replies are credited to the node their message went to -------------------------
class DeadNodeGrid(SlowGrid):
    """Message ``i`` to a node in ``dead`` is answered by the SuperLink, as Flower does."""

    def __init__(self, ready: list[float], dead: set[int]) -> None:
        super().__init__(ready)
        self.dead = dead

    def pull_messages(self, message_ids):
        out = []
        for reply in super().pull_messages(message_ids):
            sent = self.msgs[reply.metadata.reply_to_message_id]
            if sent.metadata.dst_node_id in self.dead:
                reply = create_message_error_unavailable_res_message(sent.metadata, "node_unavail")
            out.append(reply)
        return out


def test_the_superlinks_node_unavailable_reply_is_credited_to_the_dead_node():
    grid = DeadNodeGrid([0.0, 0.0, 0.0], dead={2})
    replies = _run(grid, 3, timeout=5)
    assert [r.metadata.src_node_id for r in replies] == [1, 2, 3]
    lost = replies[1]
    assert lost.has_error() and lost.error.code == ErrorCode.NODE_UNAVAILABLE
    assert lost.error.reason == NODE_UNAVAILABLE_ERROR_REASON  # Flower's own words, unchanged
    assert "Node Unavailable" in lost.error.reason
    assert lost.metadata.reply_to_message_id == "m1"
    assert lost.metadata.message_type == MessageType.TRAIN
    assert not replies[0].has_error() and not replies[2].has_error()


def test_a_reply_that_matches_no_sent_message_keeps_its_source():
    error = create_message_error_unavailable_res_message(
        _with_id(_msgs(1)[0], "m0").metadata, "node_unavail"
    )
    assert credit_error(error, {"other": 7}) is error
    assert error.metadata.src_node_id == SUPERLINK_NODE_ID


def test_a_reply_with_content_from_another_source_is_not_re_attributed():
    # Only error replies are credited: a content reply keeps its (wrong) source, so the strategy
    # refuses it as from an unsent node instead of aggregating it as node 5's.
    sent = _with_id(_msgs(1)[0], "m0")
    reply = Message(RecordDict(), reply_to=sent)
    reply.metadata.__dict__["_src_node_id"] = 9
    assert credit_error(reply, {"m0": 1}) is reply and reply.metadata.src_node_id == 9


def _with_id(msg: Message, msg_id: str) -> Message:
    msg.metadata.__dict__["_message_id"] = msg_id
    return msg
