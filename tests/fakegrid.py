"""An in-process Grid for tests: delivers messages to the ClientApp handlers directly."""

from collections.abc import Callable
from uuid import uuid4

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.server.superlink.linkstate.utils import (
    create_message_error_unavailable_ins_message,
    create_message_error_unavailable_res_message,
)
from flwr.serverapp import Grid
from flwr.supercore.date import now

from client import client_app
from maestro_common.app.protocol import CONFIG as CONFIG_KEY

Handler = Callable[[Message, Context], Message]


class FakeGrid(Grid):
    """Delivers messages to the ClientApp handlers in-process; records what went out and back.

    Nodes in ``unavailable`` are dead as the SuperLink sees them: their messages are answered
    by the SuperLink's own "Node Unavailable" error reply (Flower's function, the SuperLink's
    node id as its source). Nodes in ``silent`` do not answer what they are sent (a test may
    :meth:`answer` it later). Both sets may change between rounds. As at a SuperLink, pulling a
    message that has outlived its TTL unanswered gets Flower's "message unavailable" error.
    """

    def __init__(
        self, node_configs: dict[int, dict], run_config: dict, train: Handler | None = None
    ) -> None:
        self.node_configs = node_configs
        self.run_config = run_config
        self.handlers: dict[str, Handler] = {
            MessageType.QUERY: client_app.query,
            MessageType.TRAIN: train or client_app.train_fn,
            MessageType.EVALUATE: client_app.evaluate_fn,
        }
        self.unavailable: set[int] = set()
        self.silent: set[int] = set()
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._pending: dict[str, Message] = {}  # replies not pulled yet, by message id
        self.unanswered: dict[str, Message] = {}  # messages to silent nodes, by id

    def context(self, node_id: int) -> Context:
        return Context(
            run_id=1,
            node_id=node_id,
            node_config=dict(self.node_configs[node_id]),
            state=RecordDict(),
            run_config=dict(self.run_config),
        )

    def get_node_ids(self):
        return list(self.node_configs)

    def send_and_receive(self, messages, *, timeout=None):
        return list(self.pull_messages(self.push_messages(messages)))

    def push_messages(self, messages):
        """Deliver each message now (ids assigned as a SuperLink does); replies wait for a pull."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(msg)
            ids.append(msg.metadata.message_id)
            if msg.metadata.dst_node_id in self.silent:
                self.unanswered[msg.metadata.message_id] = msg
            else:
                self.answer(msg)
        return ids

    def answer(self, msg: Message) -> None:
        """The reply of ``msg``'s node (or the SuperLink's, for a dead node), ready to pull."""
        self.unanswered.pop(msg.metadata.message_id, None)
        node = msg.metadata.dst_node_id
        if node in self.unavailable:
            reply = create_message_error_unavailable_res_message(msg.metadata, "node_unavail")
        else:
            reply = self.handlers[msg.metadata.message_type](msg, self.context(node))
            assert reply.metadata.src_node_id == node
        self.replies.append(reply)
        self._pending[msg.metadata.message_id] = reply

    def pull_messages(self, message_ids):
        pulled = []
        for i in list(message_ids):
            if i in self._pending:
                pulled.append(self._pending.pop(i))
            elif (msg := self.unanswered.get(i)) is not None:
                meta = msg.metadata
                if meta.created_at + meta.ttl <= now().timestamp():
                    del self.unanswered[i]
                    pulled.append(create_message_error_unavailable_ins_message(i, meta.run_id))
        return pulled

    def sent_of(self, message_type: str, server_round: int) -> list[Message]:
        return [
            m
            for m in self.sent
            if m.metadata.message_type == message_type
            and m.content[CONFIG_KEY]["server-round"] == server_round
        ]

    # Not used by the strategy.
    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError
