"""Plain ClientApp: train the dense model on this node's partition and send it back."""

from __future__ import annotations

import os
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from plain_config import model_for, run_config

from client.local_data import local_splits
from maestro_common.app import protocol as P
from maestro_common.app.task import train_settings
from maestro_common.lowrank.training import train

app = ClientApp()


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    start, started_at = time.perf_counter(), time.time()
    cfg = run_config(context.run_config)
    part, parts = (
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
    )
    data, _ = local_splits(cfg, part, parts)
    model = model_for(cfg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    settings = train_settings(cfg)  # the harness's own settings for the run config
    seed = cfg.seed * 100_003 + int(msg.content["config"]["server-round"]) * 1009 + part
    torch.manual_seed(seed)
    result = train(model, data.images, data.labels, settings, None, seed)
    metrics = {  # the keys maestro-fl's clients report, so the same report reads them
        P.NUM_EXAMPLES: result.num_examples,
        P.TRAIN_SECONDS: result.seconds,
        P.HANDLE_SECONDS: time.perf_counter() - start,
        P.HANDLE_START: started_at,
        P.WORKER_PID: os.getpid(),
    }
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content, reply_to=msg)
