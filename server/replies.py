"""Reading one round's replies: each through its contract, one per node that was sent a message.

:func:`read_train_replies` and :func:`read_eval_replies` decode the replies of a round
(:mod:`maestro_common.app.protocol`) and refuse, with a reason, a reply from a node not sent
this kind of message this round, a node's second reply, and one that breaks its contract;
:func:`tier_means` averages the accepted evaluate replies per tier row. Used by
:class:`server.strategy.NestedFedAvg`; the arrays' own checks are :mod:`server.validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from logging import WARNING

from flwr.app import Message
from flwr.common.logger import log

from maestro_common.app import protocol as P
from maestro_common.app.protocol import Rejected, TrainReply
from server.validation import MIN_NUM_EXAMPLES

Refusals = list[tuple[int, str]]  # (node, reason)


def read_train_replies(
    replies: Iterable[Message], sent: Container[int]
) -> tuple[dict[int, TrainReply], Refusals]:
    """Each reply through the train-reply contract; at most one reply per node in ``sent``."""
    read: dict[int, TrainReply] = {}
    rejected: Refusals = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if node not in sent:
            outcome: TrainReply | Rejected = Rejected("reply from an unsent node")
        elif node in read or any(n == node for n, _ in rejected):
            outcome = Rejected("second reply from the node this round")
        else:
            outcome = P.decode_train_reply(msg)
        if isinstance(outcome, Rejected):
            log(WARNING, "node %s: train reply refused: %s", node, outcome.reason)
            rejected.append((node, outcome.reason))
        else:
            read[node] = outcome
    return read, rejected


def read_eval_replies(
    replies: Iterable[Message], sent: Container[int]
) -> tuple[list[tuple[int, P.EvalReply]], Refusals]:
    """Each reply through the evaluate-reply contract; the first reply of each node in ``sent``.

    A reply must also claim at least ``MIN_NUM_EXAMPLES`` examples.
    """
    accepted: list[tuple[int, P.EvalReply]] = []
    seen: set[int] = set()
    rejected: Refusals = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if node not in sent or node in seen:
            reply: P.EvalReply | Rejected = Rejected("unexpected or repeated evaluate reply")
        else:
            reply = P.decode_eval_reply(msg)
            if not isinstance(reply, Rejected) and reply.num_examples < MIN_NUM_EXAMPLES:
                reply = Rejected(
                    f"num-examples must be >= {MIN_NUM_EXAMPLES:g}, got {reply.num_examples!r}"
                )
        seen.add(node)
        if isinstance(reply, Rejected):
            log(WARNING, "node %s: evaluate reply refused: %s", node, reply.reason)
            rejected.append((node, reply.reason))
            continue
        accepted.append((node, reply))
    return accepted, rejected


def tier_means(
    accepted: Sequence[tuple[int, P.EvalReply]],
    weights: Sequence[float],
    label_of: Callable[[int], str],
) -> dict[str, dict[str, float]]:
    """Weighted accuracy and loss per row ``label_of(node)``, rows by budget, off-tier last.

    ``num-examples`` of a row is the sum of its replies' weights.
    """
    sums: dict[str, list[float]] = {}
    for (node, reply), w in zip(accepted, weights, strict=True):
        s = sums.setdefault(label_of(node), [0.0, 0.0, 0.0])
        s[0] += w
        s[1] += w * reply.accuracy
        s[2] += w * reply.loss
    return {
        label: {"accuracy": a / n, "loss": lo / n, "num-examples": n}
        for label, (n, a, lo) in sorted(sums.items(), key=lambda kv: _label_order(kv[0]))
    }


def _label_order(label: str) -> tuple[int, float]:
    """Tier rows by budget, the off-tier row last."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, 0.0)
