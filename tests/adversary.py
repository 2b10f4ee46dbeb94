"""An attacking ClientApp for tests and experiments: the real one, except on chosen partitions.

Nothing here is imported by the production ClientApp. A node whose ``partition-id`` is in the
attacked set answers a train instruction with Gaussian noise of the received shapes and claims
``num-examples`` = ``claim`` (:func:`noise_train`), or trains honestly and sends its update
sign-flipped and scaled (:func:`flip_train`); query and evaluate go to the real handlers.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from flwr.app import Context, Message

from client import client_app
from maestro_common.app import protocol as P
from maestro_common.ml.prefix import leading_block
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


def flip_train(attacked: Collection[int], factor: float = 1.9) -> Handler:
    """A train handler: on ``attacked`` partitions the honest update, sign-flipped and scaled.

    The node trains as the real ClientApp does, then returns ``global - factor · (trained -
    global)`` for every float array and claims the examples it really trained on.
    """

    def handler(msg: Message, context: Context) -> Message:
        honest = client_app.train_fn(msg, context)
        if context.node_config.get(P.PARTITION_ID) not in attacked:
            return honest
        task = P.decode_instruction(msg)
        reply = P.decode_train_reply(honest)
        flipped = {}
        for key, trained in reply.arrays.items():
            base = task.arrays[key][leading_block(trained.shape)]
            flipped[key] = (
                (base - factor * (trained - base)).astype(trained.dtype)
                if trained.dtype.kind == "f"
                else trained
            )
        return Message(
            P.encode_train_reply(flipped, reply.num_examples, reply.train_loss), reply_to=msg
        )

    return handler
