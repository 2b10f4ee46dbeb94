"""What the tests of server.strategy.NestedFedAvg share: node tables, the strategy, an echo client.

The run config, model operations and tiny IDX dataset they train on are fixtures in
tests/server/conftest.py.
"""

from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict

from maestro_common.app.config import RunConfig
from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from maestro_common.app.protocol import METRICS as METRICS_KEY
from maestro_common.app.protocol import from_record, to_record
from server.model_ops import ModelOps
from server.strategy import NestedFedAvg
from tests.fakegrid import Handler

NUM_TRAIN, NUM_TEST = 400, 100
FACTORED = {"conv2", "fc1", "fc2"}  # lenet5's factored layers (first conv and head stay dense)


def partition_nodes(n: int, first_id: int = 1_000_003) -> dict[int, dict]:
    # Node ids unrelated to partition ids, as Flower draws them.
    return {first_id + 7919 * i: {"partition-id": i, "num-partitions": n} for i in range(n)}


def new_strategy(ops: ModelOps, cfg: RunConfig, clients_per_eval: int = 0) -> NestedFedAvg:
    return NestedFedAvg(ops.axes, cfg.clients_per_round, clients_per_eval, cfg.seed)


def copy_arrays(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def assert_bit_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def echo(corrupt: Callable[[dict, dict], None] | None = None) -> Handler:
    """A train handler that skips training: replies with the received arrays + 0.5."""

    def handler(msg: Message, context: Context) -> Message:
        arrays = {
            k: v + np.asarray(0.5, v.dtype) for k, v in from_record(msg.content[ARRAYS_KEY]).items()
        }
        metrics = {"num-examples": 10, "train-loss": 1.0}
        if corrupt is not None:
            corrupt(arrays, metrics)
        content = RecordDict({ARRAYS_KEY: to_record(arrays), METRICS_KEY: MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    return handler


def nan_entry(arrays, metrics):
    arrays["fc1.u"][0, 0] = np.nan
