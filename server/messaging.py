"""Send messages to nodes and collect their replies, pulling often.

Flower's ``Grid.send_and_receive`` against a SuperLink in deployment (the ``HttpGrid`` a
ServerApp gets from ``flower-superlink`` with SuperNodes) sleeps 3 s between pulls. A phase of a
round (training, federated evaluation, the tier query) therefore ends on the first 3 s boundary
after its last reply: on average 1.5 s lost per phase. (The simulation engine hands the
ServerApp an ``InMemoryGrid`` that pulls every 0.1 s.) Here the wait between pulls starts at
:data:`FIRST_INTERVAL` and doubles up to :data:`MAX_INTERVAL` while replies are outstanding, so
a phase ends at most ``MAX_INTERVAL`` after its last reply, in deployment and simulation alike,
for at most ten pulls a second (each one a small request with the outstanding message ids).

An error reply is credited to the node its message was sent to. When a SuperNode dies, the
SuperLink itself answers for it (Flower's "Node Unavailable"), with the SuperLink's own node id
as the source; the ServerApp's grid does the same when a reply's objects cannot be pulled. Such
a reply is matched to the node by its ``reply_to_message_id`` and handed on as that node's error
reply, with Flower's error code and reason unchanged, so that the round records which node was
lost and why. Only error replies are re-attributed: a reply with content whose source is not the
node it answers keeps its source (and is refused as from an unsent node).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from logging import WARNING
from typing import Any

from flwr.app import Message, Metadata
from flwr.app.message import make_message
from flwr.common.logger import log
from flwr.serverapp import Grid

FIRST_INTERVAL = 0.01
MAX_INTERVAL = 0.1


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float | None, **pull: Any
) -> list[Message]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` seconds pass.

    Returns the replies received, in the order of ``messages`` (a node that did not reply in
    time has none; ``timeout=None`` waits for every reply). A message the SuperLink did not
    take (``None`` for its id, as Flower reports a malformed one) gets no reply, and a warning
    says how many. An error reply comes back as from the node its message was sent to
    (:func:`credit_error`). ``pull``: the keyword arguments of :func:`collect` (how often to
    pull, the clock).
    """
    return collect(grid, push(grid, messages), timeout, **pull)


def push(grid: Grid, messages: Iterable[Message]) -> dict[str, int]:
    """Push ``messages``; returns the node each taken message went to, by id, in push order.

    A message the SuperLink did not take (``None`` for its id) is left out, and a warning says
    how many.
    """
    sent = list(messages)
    pushed = list(grid.push_messages(sent))
    destination = {i: m.metadata.dst_node_id for i, m in zip(pushed, sent, strict=False) if i}
    if len(destination) < len(pushed):
        log(
            WARNING,
            "%d of %d messages were not taken by the SuperLink: their nodes send no reply",
            len(pushed) - len(destination),
            len(pushed),
        )
    return destination


def collect(
    grid: Grid,
    destination: Mapping[str, int],
    timeout: float | None,
    *,
    first_interval: float = FIRST_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Message]:
    """Pull the replies to the pushed messages ``destination`` (id → node) until all are in.

    Stops after ``timeout`` seconds (None: waits for every reply). Returns the replies in the
    order of ``destination``, each error reply credited to its node (:func:`credit_error`).
    Pulling a reply is what lets the SuperLink delete a message and its reply, so a caller that
    stops waiting should pull the rest later (as the tier query does) or give its messages a
    TTL.
    """
    waiting = set(destination)
    end = None if timeout is None else clock() + timeout
    interval = first_interval
    replies: list[Message] = []
    while waiting:
        got = [credit_error(m, destination) for m in grid.pull_messages(sorted(waiting))]
        replies.extend(got)
        waiting -= {m.metadata.reply_to_message_id for m in got}
        if not waiting or (end is not None and clock() >= end):
            break
        sleep(interval)
        interval = min(2 * interval, max_interval)
    # In the order the messages were sent, not of arrival: what is done with the replies (the
    # order of floating-point sums) must not depend on which client finished first.
    order = {msg_id: k for k, msg_id in enumerate(destination)}
    return sorted(replies, key=lambda m: order.get(m.metadata.reply_to_message_id, len(order)))


def credit_error(reply: Message, destination: Mapping[str, int]) -> Message:
    """An error reply as from the node whose message it answers; any other reply unchanged.

    Parameters
    ----------
    reply : Message
        A pulled reply.
    destination : mapping of str to int
        The node each pushed message went to, by message id.

    Returns
    -------
    Message
        ``reply`` itself, unless it carries an error, answers a message in ``destination`` and
        names another source (the SuperLink's node id for "Node Unavailable"): then a copy with
        that message's node as its source and the same error.
    """
    node = destination.get(reply.metadata.reply_to_message_id)
    if node is None or not reply.has_error() or reply.metadata.src_node_id == node:
        return reply
    meta = reply.metadata
    log(
        WARNING,
        "node %s: no reply; node %s reports error %s: %s",
        node,
        meta.src_node_id,
        reply.error.code,
        reply.error.reason,
    )
    credited = Metadata(
        run_id=meta.run_id,
        message_id=meta.message_id,
        src_node_id=node,
        dst_node_id=meta.dst_node_id,
        reply_to_message_id=meta.reply_to_message_id,
        group_id=meta.group_id,
        created_at=meta.created_at,
        ttl=meta.ttl,
        message_type=meta.message_type,
        src_task_id=meta.src_task_id,
        dst_task_id=meta.dst_task_id,
    )
    return make_message(metadata=credited, error=reply.error)
