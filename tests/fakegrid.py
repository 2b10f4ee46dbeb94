"""An in-process Grid for tests: delivers messages to the ClientApp handlers directly."""

from collections.abc import Callable
from uuid import uuid4

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp import Grid

from client import client_app
from maestro_common.app.protocol import CONFIG as CONFIG_KEY

Handler = Callable[[Message, Context], Message]


class FakeGrid(Grid):
    """Delivers messages to the ClientApp handlers in-process; records what went out and back.

    Nodes in ``unavailable`` are dead as the SuperLink sees them: their messages are answered
    by the SuperLink's own "Node Unavailable" error reply (Flower's function, the SuperLink's
    node id as its source). Nodes in ``silent`` never answer. Both sets may change between
    rounds.
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
        self._pending: dict[str, Message] = {}

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
            node = msg.metadata.dst_node_id
            ids.append(msg.metadata.message_id)
            if node in self.silent:
                continue
            if node in self.unavailable:
                reply = create_message_error_unavailable_res_message(msg.metadata, "node_unavail")
            else:
                reply = self.handlers[msg.metadata.message_type](msg, self.context(node))
                assert reply.metadata.src_node_id == node
            self.replies.append(reply)
            self._pending[msg.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids):
        return [self._pending.pop(i) for i in list(message_ids) if i in self._pending]

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
