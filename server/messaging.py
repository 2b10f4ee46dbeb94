"""Send messages to nodes and collect their replies, pulling often.

Flower's ``Grid.send_and_receive`` against a SuperLink in deployment (the ``HttpGrid`` a
ServerApp gets from ``flower-superlink`` with SuperNodes) sleeps 3 s between pulls. A phase of a
round (training, federated evaluation, the tier query) therefore ends on the first 3 s boundary
after its last reply: on average 1.5 s lost per phase. (The simulation engine hands the
ServerApp an ``InMemoryGrid`` that pulls every 0.1 s.) Here the wait between pulls starts at
:data:`FIRST_INTERVAL` and doubles up to :data:`MAX_INTERVAL` while replies are outstanding, so
a phase ends at most ``MAX_INTERVAL`` after its last reply, in deployment and simulation alike,
for at most ten pulls a second (each one a small request with the outstanding message ids).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import WARNING

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

FIRST_INTERVAL = 0.01
MAX_INTERVAL = 0.1


def send_and_receive(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float | None,
    *,
    first_interval: float = FIRST_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Message]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` seconds pass.

    Returns the replies received, in the order of ``messages`` (a node that did not reply in
    time has none; ``timeout=None`` waits for every reply). A message the SuperLink did not
    take (``None`` for its id, as Flower reports a malformed one) gets no reply, and a warning
    says how many.
    """
    pushed = list(grid.push_messages(messages))
    waiting = {i for i in pushed if i}
    if len(waiting) < len(pushed):
        log(
            WARNING,
            "%d of %d messages were not taken by the SuperLink: their nodes send no reply",
            len(pushed) - len(waiting),
            len(pushed),
        )
    end = None if timeout is None else clock() + timeout
    interval = first_interval
    replies: list[Message] = []
    while waiting:
        got = list(grid.pull_messages(sorted(waiting)))
        replies.extend(got)
        waiting -= {m.metadata.reply_to_message_id for m in got}
        if not waiting or (end is not None and clock() >= end):
            break
        sleep(interval)
        interval = min(2 * interval, max_interval)
    # In the order the messages were sent, not of arrival: what is done with the replies (the
    # order of floating-point sums) must not depend on which client finished first.
    order = {msg_id: k for k, msg_id in enumerate(pushed) if msg_id}
    return sorted(replies, key=lambda m: order.get(m.metadata.reply_to_message_id, len(order)))
