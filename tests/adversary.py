"""An attacking ClientApp for tests and experiments: the real one, except on chosen partitions.

Nothing here is imported by the production ClientApp. A node whose ``partition-id`` is in the
attacked set answers a train instruction with Gaussian noise of the received shapes and claims
``num-examples`` = ``claim``; query and evaluate go to the real handlers.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from flwr.app import Context, Message

from client import client_app
from maestro_common.app import protocol as P
from tests.fakegrid import Handler


def noise_train(
    attacked: Collection[int], claim: float = 1e9, scale: float = 1.0, seed: int = 0
) -> Handler:
    """A train handler: noise and an inflated ``num-examples`` on ``attacked`` partitions."""

    def handler(msg: Message, context: Context) -> Message:
        partition = context.node_config.get(P.PARTITION_ID)
        if partition not in attacked:
            return client_app.train_fn(msg, context)
        task = P.decode_instruction(msg)
        rng = np.random.default_rng([seed, task.server_round, int(partition)])
        noise = {
            k: (scale * rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in task.arrays.items()
        }
        return Message(P.encode_train_reply(noise, claim, 0.1), reply_to=msg)

    return handler
