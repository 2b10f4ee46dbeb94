"""ClientApp: report the tier, train the received prefix with ordered dropout, evaluate locally."""

from __future__ import annotations

import dataclasses
import os
import resource
import time
import zlib

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.local_data import local_splits, own_splits
from maestro_common.app import protocol as P
from maestro_common.app.autotier import auto_tier, is_auto
from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.cost import match_step_macs, round_steps
from maestro_common.app.malloc import client_wants_tuning, tune_malloc
from maestro_common.app.protocol import Instruction
from maestro_common.app.task import (
    build_run_model,
    input_shape,
    load_run_config,
    resolve_device,
    run_method,
    train_settings,
)
from maestro_common.app.tiers import resolve_budget
from maestro_common.lowrank.training import TrainResult, evaluate, train
from maestro_common.ml.prefix import array_shapes, take_prefix

app = ClientApp()
_malloc = {"decided": False}  # per process: decided on its first message


def _setup(context: Context) -> None:
    """Once per client process, on its first message: malloc tuning where wanted."""
    if not _malloc["decided"]:
        _malloc["decided"] = True
        if client_wants_tuning(context.node_config):
            tune_malloc()


def _partition(context: Context) -> tuple[int, int]:
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ValueError(
            "this node has no data: give the SuperNode --node-config 'data-path=<folder or "
            ".npz>' or 'partition-id=<i> num-partitions=<n>' (simulation sets both)"
        )
    return int(node["partition-id"]), int(node["num-partitions"])


def _splits(cfg: RunConfig, context: Context):
    """This node's (train, validation) data: its own ``data-path``, else its partition."""
    path = context.node_config.get("data-path")
    if path is not None:
        return own_splits(str(path), cfg.dataset, cfg.val_fraction, cfg.seed)
    return local_splits(cfg, *_partition(context))


def _data_seed_id(context: Context) -> int:
    # Seeds follow the partition id where there is one (reproducible across runs).
    return int(context.node_config.get("partition-id", context.node_id))


def _model_from(
    arrays: dict, cfg: RunConfig, device: torch.device
) -> tuple[torch.nn.Module, dict[str, tuple[int, ...]], dict[str, int]]:
    """The model holding the received sub-model, the shapes received, and the global model's
    ranks before the received prefix cut them."""
    method = run_method(cfg)
    model = build_run_model(cfg)
    global_ranks = method.ranks(model)
    model = method.load(model, arrays)
    return model.to(device), array_shapes(arrays), global_ranks


def _sampler(
    cfg: RunConfig,
    model: torch.nn.Module,
    task: Instruction,
    seed: int,
    global_ranks: dict[str, int],
):
    """Which sub-model(s) each local step trains: the run's method decides."""
    grid = list(task.budget_grid) or [task.budget]
    method = run_method(cfg)
    return method.sampler(model, cfg, task.budget, grid, seed, task.rank_fraction, global_ranks)


def _seed(cfg: RunConfig, server_round: int, partition_id: int) -> int:
    # A pure function of (seed, round, partition): reproducible whatever the node id.
    return zlib.crc32(f"{cfg.seed}/{server_round}/{partition_id}".encode())


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's budget β, tier and partition.

    With ``rank-fraction="auto"`` the node first measures itself, picks its tier
    (:mod:`maestro_common.app.autotier`) and adds what it measured to the reply.
    """
    _setup(context)
    cfg = load_run_config(context.run_config)
    measured = {}
    if is_auto(context.node_config):
        choice = auto_tier(context.node_config, cfg)
        beta, tier, measured = choice.beta, choice.tier, choice.to_record()
    else:
        beta, tier = resolve_budget(context.node_config, cfg.tiers, cfg.shares, cfg.seed)
    part = context.node_config.get(P.PARTITION_ID)
    return Message(
        P.encode_tier_reply(beta, tier, None if part is None else int(part), measured),
        reply_to=msg,
    )


def local_round(
    cfg: RunConfig,
    task: Instruction,
    train_ds,
    seed_id: int,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, np.ndarray], TrainResult]:
    """One round of local training: the received prefix trained on ``train_ds`` as the run's
    method says, for ``cfg.local_epochs``. Returns the reply's arrays (the prefix, in the shapes
    received) and the training result. ``seed_id`` seeds it (the partition id where there is one).
    """
    model, shapes, global_ranks = _model_from(task.arrays, cfg, device)
    seed = _seed(cfg, task.server_round, seed_id)
    torch.manual_seed(seed)
    sampler = _sampler(cfg, model, task, seed, global_ranks)
    settings = train_settings(cfg, lr=task.lr)  # the server's round lr, when it sends one
    method = run_method(cfg)
    if cfg.compute_match:
        # Equal client compute: as many steps as spend the matched method's round MACs here (the
        # server's clock prices the round with the same functions).
        grid = list(task.budget_grid) or [task.budget]
        own = method.step_macs(
            model, cfg, task.budget, grid, input_shape(cfg), task.rank_fraction, global_ranks
        )
        steps = round_steps(cfg, len(train_ds), own, match_step_macs(cfg, task.rank_fraction))
        settings = dataclasses.replace(settings, steps=steps)
    result = train(
        model,
        train_ds.images,
        train_ds.labels,
        settings,
        sampler,
        seed,
        device,
        # Sequential freezing rotates per local epoch, continuing across rounds.
        freezing=method.freezing(cfg),
        period_offset=(task.server_round - 1) * cfg.local_epochs,
    )
    return take_prefix(model_arrays(model), shapes), result


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    """Train the received prefix for E local epochs inside its budget; reply with the prefix."""
    start, started_at = time.perf_counter(), time.time()
    _setup(context)
    task = P.decode_instruction(msg)
    cfg = load_run_config(context.run_config)
    device = resolve_device(cfg)
    train_ds, _ = _splits(cfg, context)
    arrays, result = local_round(cfg, task, train_ds, _data_seed_id(context), device)
    extra = {
        P.TRAIN_SECONDS: result.seconds,
        # The process's peak resident set (Linux reports KiB); psutil has no peak on Linux.
        P.PEAK_RSS_MB: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Results depend on it (floating-point order); the harness pins it per client.
        P.TORCH_THREADS: torch.get_num_threads(),
        P.HANDLE_SECONDS: time.perf_counter() - start,
        P.HANDLE_START: started_at,
        P.WORKER_PID: os.getpid(),
    }
    content = P.encode_train_reply(arrays, result.num_examples, result.loss, extra)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    """Accuracy and loss of the received prefix on this client's validation split."""
    _setup(context)
    task = P.decode_instruction(msg)
    cfg = load_run_config(context.run_config)
    device = resolve_device(cfg)
    _, val_ds = _splits(cfg, context)
    model, _, _ = _model_from(task.arrays, cfg, device)
    # The same sub-model the server evaluates for this tier (see Method.loaded_budget).
    budget = run_method(cfg).loaded_budget(task.budget)
    loss, acc = evaluate(model, val_ds.images, val_ds.labels, budget, device=device)
    return Message(P.encode_eval_reply(len(val_ds), loss, acc), reply_to=msg)
