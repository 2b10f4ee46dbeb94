"""Canary: the Flower internals the tests lean on are still where the fixtures expect them."""

from flwr.app import Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from tests.conftest import IDENTITY


def test_task_identity_has_settable_public_ids(task_identity):
    for name in IDENTITY:
        prop = getattr(type(TaskIdentity), name, None)
        assert isinstance(prop, property) and prop.fset is not None, (
            f"flwr moved TaskIdentity.{name}: update the task_identity fixture in "
            "tests/conftest.py (instruction messages need run, node and task ids outside a run)"
        )
    assert (TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id) == (1, 0, 1)
    msg = Message(RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN)
    assert msg.metadata.run_id == 1 and msg.metadata.dst_node_id == 5
