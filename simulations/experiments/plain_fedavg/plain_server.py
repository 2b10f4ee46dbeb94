"""Plain ServerApp: Flower's own FedAvg, timed round by round.

Flower's ``FedAvg.start`` runs the rounds (its ``Grid.send_and_receive``, its sampling and
aggregation); this only measures them: the wall time between the ends of consecutive rounds,
the aggregation inside them, the clients' reported times and the centralized evaluation, as one
JSON row per round in ``output-file`` in the schema of maestro-fl's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from plain_config import model_for, run_config

from maestro_common.lowrank.training import evaluate
from maestro_common.ml.data import load_dataset

app = ServerApp()


class TimedFedAvg(FedAvg):
    """FedAvg, unchanged, with its aggregation timed and the clients' metrics kept."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.aggregate_seconds: dict[int, float] = {}
        self.clients: dict[int, list[dict]] = {}

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        start = time.perf_counter()
        out = super().aggregate_train(server_round, replies)
        self.aggregate_seconds[server_round] = time.perf_counter() - start
        self.clients[server_round] = [
            {k: float(v) for k, v in r.content["metrics"].items()}
            for r in replies
            if r.has_content()
        ]
        return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = run_config(context.run_config)
    out = str(context.run_config.get("output-file", ""))
    model = model_for(cfg)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir or None)
    n_test = cfg.max_test_examples or len(test.labels)
    images, labels = test.images[:n_test], test.labels[:n_test]
    nodes = len(list(grid.get_node_ids())) or cfg.clients_per_round
    strategy = TimedFedAvg(
        fraction_train=cfg.clients_per_round / nodes,
        fraction_evaluate=0.0,
        min_train_nodes=cfg.clients_per_round,
        min_evaluate_nodes=0,
        min_available_nodes=cfg.min_nodes,
    )
    rows: list[dict] = []
    last = {"end": time.perf_counter(), "epoch": time.time()}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            last["end"], last["epoch"] = time.perf_counter(), time.time()
            return None
        eval_seconds, metrics = 0.0, None
        if server_round % cfg.eval_every == 0 or server_round == cfg.num_rounds:
            start = time.perf_counter()
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, acc = evaluate(model, images, labels)
            eval_seconds = time.perf_counter() - start
            metrics = MetricRecord({"accuracy": acc, "loss": loss})
        end = time.perf_counter()
        wall = end - last["end"]
        aggregate = strategy.aggregate_seconds.get(server_round, 0.0)
        row = {
            "round": server_round,
            "wall-seconds": wall,
            # FedAvg.start times nothing itself: the training phase is the rest of the round,
            # and it starts when the previous round's evaluation returns.
            "train-start": last["epoch"],
            "train-seconds": wall - eval_seconds - aggregate,
            "eval-seconds": eval_seconds,
            "aggregate-seconds": aggregate,
            "virtual-seconds": 0.0,
            "virtual-clock": 0.0,
            "clients": strategy.clients.get(server_round, []),
        }
        if metrics is not None:
            row["tiers"] = {"1": {"accuracy": acc, "loss": loss}}
        rows.append(row)
        last["end"], last["epoch"] = end, time.time()
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return metrics

    torch.manual_seed(cfg.seed)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_rounds,
        train_config=ConfigRecord({"lr": cfg.lr}),
        evaluate_fn=evaluate_fn,
    )
