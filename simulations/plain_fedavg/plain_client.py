"""Plain ClientApp: train the dense model on this node's partition and send it back."""

from __future__ import annotations

import os
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from plain_config import model_for, run_config

from client.local_data import local_splits
from maestro_common.ml.training import TrainSettings, train

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
    settings = TrainSettings(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.momentum,
        max_grad_norm=cfg.max_grad_norm,
    )
    seed = cfg.seed * 100_003 + int(msg.content["config"]["server-round"]) * 1009 + part
    torch.manual_seed(seed)
    result = train(model, data.images, data.labels, settings, None, seed)
    metrics = {
        "num-examples": result.num_examples,
        "train-seconds": result.seconds,
        "handle-seconds": time.perf_counter() - start,
        "handle-start": started_at,
        "worker-pid": os.getpid(),
    }
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content, reply_to=msg)
