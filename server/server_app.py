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
from maestro_common.malloc import tune_malloc
from maestro_common.schedules import round_lr
from server.evaluation import ModelOps
from server.report import plot_accuracy, write_summary
from server.results import RunRecorder
from server.strategy import NestedFedAvg, RoundLog
from simulations.policy import VirtualClockPolicy, run_profiles

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


def make_strategy(
    cfg: RunConfig, ops: ModelOps, state: dict[str, dict[str, np.ndarray]]
) -> tuple[NestedFedAvg, ConfigRecord]:
    """The run's strategy and train config; ``state["arrays"]`` tracks the global arrays."""

    def cost(beta: float) -> tuple[int, int, int]:
        """Forward MACs per example and payload bytes of tier β's sub-model, for the clock."""
        arrays = state["arrays"]
        shapes = ops.shapes({k: v.shape for k, v in arrays.items()}, beta)
        nbytes = int(sum(np.prod(s) * arrays[k].itemsize for k, s in shapes.items()))
        return ops.forward_macs(arrays, beta), nbytes, nbytes

    policy = VirtualClockPolicy(
        run_profiles(cfg), cost, cfg.local_epochs, cfg.seed, cfg.deadline, cfg.deadline_policy
    )
    strategy = NestedFedAvg(
        ops.axes,
        cfg.clients_per_round,
        cfg.clients_per_eval,
        cfg.seed,
        min_available_nodes=cfg.min_nodes,
        shapes_fn=ops.shapes,
        budget_fn=ops.method_budget,
        policy=policy,
        lr_fn=lambda rnd: round_lr(cfg.lr, cfg.lr_schedule, rnd, cfg.num_rounds),
    )
    # FjORD samples its width per batch from the tiers' widths (up to the client's own).
    train_config = ConfigRecord({"budget-grid": [ops.method_budget(b) for b in cfg.tiers]})
    return strategy, train_config


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_run_config(context.run_config)
    tune_malloc()  # evaluation batches of 1000: 1.7-1.8x faster with memory kept (docs/results.md)
    folder = run_folder(cfg)
    recorder = RunRecorder(folder, cfg.to_run_config(), resume=cfg.resume)
    log(INFO, "run folder: %s (starting after round %d)", folder, recorder.start_round)
    ops = ModelOps(cfg)
    arrays = recorder.initial_arrays or ops.initial_arrays()
    if recorder.start_round >= cfg.num_rounds:
        log(INFO, "all %d rounds are already done", cfg.num_rounds)
        return
    state = {"arrays": arrays}
    strategy, train_config = make_strategy(cfg, ops, state)
    wait_for_nodes(grid, cfg.min_nodes, cfg.round_timeout)
    strategy.discover(grid, timeout=cfg.round_timeout)
    if not strategy.nodes:
        raise RuntimeError("no node reported its tier; see the client logs")
    previous = recorder.rows()
    clock = {"virtual": previous[-1].get("virtual-clock", 0.0) if previous else 0.0}

    def evaluate_round(rnd: int) -> bool:
        return rnd % cfg.eval_every == 0 or rnd == cfg.num_rounds

    def on_round_end(round_log: RoundLog, new_arrays: dict[str, np.ndarray], start: float) -> None:
        rnd = round_log.server_round
        state["arrays"] = new_arrays
        clock["virtual"] += round_log.virtual_seconds
        row = {
            "round": rnd,
            "ranks": ops.ranks(new_arrays),
            "clients": round_log.clients,
            "rejected": [[int(n), reason] for n, reason in round_log.rejected],
            "federated": round_log.federated,
            "shrunk": round_log.shrunk,
            "dropped": [int(n) for n in round_log.dropped],
            "virtual-seconds": round_log.virtual_seconds,
            "virtual-clock": clock["virtual"],
            "aggregate-seconds": round_log.aggregate_seconds,
            "train-seconds": round_log.train_seconds,
        }
        if evaluate_round(rnd):
            betas = sorted(set(cfg.tiers) | {n.beta for n in strategy.nodes.values()})
            eval_start = time.perf_counter()
            row["tiers"] = ops.evaluate_tiers(new_arrays, betas)
            row["eval-seconds"] = time.perf_counter() - eval_start
            accs = ", ".join(f"β={b}: {100 * m['accuracy']:.2f}%" for b, m in row["tiers"].items())
            log(INFO, "round %d test accuracy: %s", rnd, accs)
        row["wall-seconds"] = time.perf_counter() - start
        recorder.record_round(rnd, new_arrays, row)

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
        evaluate_round=evaluate_round,
    )
    rows = recorder.rows()
    table = write_summary(folder, rows, f"{cfg.name}: {cfg.method} {cfg.model} on {cfg.dataset}")
    plot_accuracy(folder, rows)
    log(INFO, "results in %s\n%s", folder, table)
