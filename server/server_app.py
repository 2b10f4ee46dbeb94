"""ServerApp: nested low-rank federated training across device tiers, with resume."""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from maestro_common.config import RunConfig
from server.evaluation import ModelOps
from server.report import plot_accuracy, write_summary
from server.results import RunRecorder
from server.strategy import NestedFedAvg, RoundLog

app = ServerApp()


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> None:
    """Block until ``minimum`` nodes are connected (deployment nodes join over time)."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than min-nodes={minimum} nodes connected after {timeout}s")
        time.sleep(1.0)


def run_folder(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir).expanduser().resolve() / cfg.name


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_run_config(context.run_config)
    folder = run_folder(cfg)
    recorder = RunRecorder(folder, cfg.to_run_config(), resume=cfg.resume)
    log(INFO, "run folder: %s (starting after round %d)", folder, recorder.start_round)
    ops = ModelOps(cfg)
    arrays = recorder.initial_arrays or ops.initial_arrays()
    if recorder.start_round >= cfg.num_rounds:
        log(INFO, "all %d rounds are already done", cfg.num_rounds)
        return
    strategy = NestedFedAvg(
        ops.axes,
        cfg.clients_per_round,
        cfg.clients_per_eval,
        cfg.seed,
        min_available_nodes=cfg.min_nodes,
    )
    wait_for_nodes(grid, cfg.min_nodes, cfg.round_timeout)
    strategy.discover(grid, timeout=cfg.round_timeout)
    if not strategy.nodes:
        raise RuntimeError("no node reported its tier; see the client logs")

    def on_round_end(round_log: RoundLog, new_arrays: dict[str, np.ndarray], start: float) -> None:
        rnd = round_log.server_round
        row = {
            "round": rnd,
            "ranks": ops.ranks(new_arrays),
            "clients": round_log.clients,
            "rejected": [[int(n), reason] for n, reason in round_log.rejected],
            "federated": round_log.federated,
            "shrunk": round_log.shrunk,
            "aggregate-seconds": round_log.aggregate_seconds,
            "train-seconds": round_log.train_seconds,
        }
        if rnd % cfg.eval_every == 0 or rnd == cfg.num_rounds:
            betas = sorted(set(cfg.tiers) | {n.beta for n in strategy.nodes.values()})
            if not cfg.factored:
                betas = [1.0]  # dense FedAvg: every node holds the whole model
            eval_start = time.perf_counter()
            row["tiers"] = ops.evaluate_tiers(new_arrays, betas)
            row["eval-seconds"] = time.perf_counter() - eval_start
            accs = ", ".join(f"β={b}: {100 * m['accuracy']:.2f}%" for b, m in row["tiers"].items())
            log(INFO, "round %d test accuracy: %s", rnd, accs)
        row["wall-seconds"] = time.perf_counter() - start
        recorder.record_round(rnd, new_arrays, row)

    train_config = ConfigRecord({})
    strategy.run(
        grid,
        arrays,
        cfg.num_rounds,
        train_config,
        start_round=recorder.start_round,
        timeout=cfg.round_timeout,
        shrink_fn=ops.shrink if cfg.factored else None,
        shrink_every=cfg.shrink_every,
        on_round_end=on_round_end,
    )
    rows = recorder.rows()
    table = write_summary(folder, rows, f"{cfg.name}: {cfg.method} {cfg.model} on {cfg.dataset}")
    plot_accuracy(folder, rows)
    log(INFO, "results in %s\n%s", folder, table)
