"""ClientApp: report the tier, train the received prefix with ordered dropout, evaluate locally."""

from __future__ import annotations

import resource
import zlib

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.local_data import local_splits
from maestro_common.codec import load_arrays, load_leading_blocks, model_arrays, payload_nbytes
from maestro_common.config import RunConfig
from maestro_common.layers import low_rank_layers
from maestro_common.malloc import tune_malloc
from maestro_common.prefix import take_prefix
from maestro_common.samplers import NestedSampler, WidthSampler, make_sampler
from maestro_common.task import build_run_model, resolve_device
from maestro_common.tiers import resolve_budget
from maestro_common.training import TrainSettings, evaluate, train

ARRAYS_KEY, CONFIG_KEY, METRICS_KEY = "arrays", "config", "metrics"

app = ClientApp()
tune_malloc()  # once per client process (see maestro_common.malloc)


def _partition(context: Context) -> tuple[int, int]:
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ValueError(
            "this node has no data partition: give the SuperNode --node-config "
            "'partition-id=<i> num-partitions=<n>' (simulation sets both)"
        )
    return int(node["partition-id"]), int(node["num-partitions"])


def _model_from(
    msg: Message, cfg: RunConfig, device: torch.device
) -> tuple[torch.nn.Module, dict[str, tuple[int, ...]]]:
    """The model holding the received sub-model, and the shapes received."""
    arrays = {k: v.numpy() for k, v in msg.content[ARRAYS_KEY].items()}
    model = build_run_model(cfg)
    if cfg.factored:
        load_arrays(model, arrays)  # the factors shrink to the received rank prefix
    else:
        load_leading_blocks(model, arrays)  # width: full shapes, only the leading block is used
    return model.to(device), {k: tuple(v.shape) for k, v in arrays.items()}


def _sampler(cfg: RunConfig, model: torch.nn.Module, config: ConfigRecord, seed: int):
    """Which sub-model each local step trains."""
    budget = float(config["budget"])
    if cfg.factored and cfg.objective == "nested":
        # The whole received prefix, plus sub-models at the tiers' fractions of the global ranks
        # R_l. The prefix holds ⌈β·R_l⌉, so ⌊r/β⌋ ≈ R_l (exact without server-side shrinking).
        beta = float(config["rank-fraction"])
        initial = {n: m.rank for n, m in low_rank_layers(build_run_model(cfg)).items()}
        received = {n: m.rank for n, m in low_rank_layers(model).items()}
        full = {n: max(1, min(initial[n], int(r / beta + 1e-9))) for n, r in received.items()}
        return NestedSampler(
            full,
            beta=beta,
            grid=cfg.tiers,
            rule=cfg.sub_models,
            full_pass_share=cfg.full_pass_share,
            seed=seed,
            caps=received,
        )
    if cfg.factored:
        # The received prefix *is* the budget: sample within all of it.
        ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
        return make_sampler(cfg.sampler, ranks, beta=1.0, seed=seed)
    if cfg.method == "fjord":
        # Ordered dropout over widths: p per batch from the tiers' widths up to this client's.
        return WidthSampler(list(config["budget-grid"]), max_width=budget, seed=seed)
    if cfg.width_sliced:
        return WidthSampler([budget], max_width=budget, seed=seed)  # static width
    return None


def _seed(cfg: RunConfig, server_round: int, partition_id: int) -> int:
    # A pure function of (seed, round, partition): reproducible whatever the node id.
    return zlib.crc32(f"{cfg.seed}/{server_round}/{partition_id}".encode())


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's budget β, tier and partition."""
    cfg = RunConfig.from_run_config(context.run_config)
    beta, tier = resolve_budget(context.node_config, cfg.tiers, cfg.shares, cfg.seed)
    part = int(context.node_config.get("partition-id", -1))
    info = ConfigRecord(
        {"rank-fraction": beta, "tier": -1 if tier is None else tier, "partition-id": part}
    )
    return Message(RecordDict({CONFIG_KEY: info}), reply_to=msg)


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    """Train the received prefix for E local epochs inside its budget; reply with the prefix."""
    cfg = RunConfig.from_run_config(context.run_config)
    config = msg.content[CONFIG_KEY]
    server_round = int(config["server-round"])
    device = resolve_device(cfg)
    partition_id, num_partitions = _partition(context)
    train_ds, _ = local_splits(cfg, partition_id, num_partitions)
    model, shapes = _model_from(msg, cfg, device)
    seed = _seed(cfg, server_round, partition_id)
    torch.manual_seed(seed)
    sampler = _sampler(cfg, model, config, seed)
    settings = TrainSettings(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=float(config["lr"]) if "lr" in config else cfg.lr,  # the server's round lr
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lasso=cfg.lasso if cfg.factored else 0.0,
        distill=cfg.distill,
        distill_temperature=cfg.distill_temperature,
    )
    result = train(model, train_ds.images, train_ds.labels, settings, sampler, seed, device)
    arrays = take_prefix(model_arrays(model), shapes)
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "train-loss": result.loss,
            "train-seconds": result.seconds,
            # The process's peak resident set (Linux reports KiB); psutil has no peak on Linux.
            "peak-rss-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bytes-up": payload_nbytes(arrays),
            "rank-fraction": float(config["rank-fraction"]),
        }
    )
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return Message(RecordDict({ARRAYS_KEY: record, METRICS_KEY: metrics}), reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    """Accuracy and loss of the received prefix on this client's validation split."""
    cfg = RunConfig.from_run_config(context.run_config)
    device = resolve_device(cfg)
    partition_id, num_partitions = _partition(context)
    _, val_ds = local_splits(cfg, partition_id, num_partitions)
    model, _ = _model_from(msg, cfg, device)
    # A factored model was cut to its prefix on loading; a width model runs at its width.
    budget = float(msg.content[CONFIG_KEY]["budget"]) if cfg.width_sliced else 1.0
    loss, acc = evaluate(model, val_ds.images, val_ds.labels, budget, device=device)
    metrics = MetricRecord({"num-examples": len(val_ds), "eval-loss": loss, "eval-accuracy": acc})
    return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)
