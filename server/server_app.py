"""ServerApp: nested low-rank federated training across device tiers, with resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from maestro_common.app import protocol as P
from maestro_common.app.checkpoint import check_arrays
from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.cost import round_steps
from maestro_common.app.malloc import tune_malloc
from maestro_common.app.runlock import FolderLock
from maestro_common.app.task import load_run_config
from maestro_common.app.warmup import factor_arrays, in_warmup, warmup_config, whole_model
from maestro_common.ml.schedules import round_lr
from server.aggregation import Rule
from server.model_ops import ModelOps
from server.policy import EligibleOnly, VirtualClockPolicy, run_profiles
from server.profiles import TierProfile
from server.report import plot_accuracy, write_summary
from server.results import CHECKPOINT, RunRecorder
from server.rounds import RoundLog, RoundPolicy
from server.strategy import NestedFedAvg
from server.tensorboard_log import TierBoard

app = ServerApp()


def wait_for_nodes(grid: Grid, minimum: int, timeout: float, every: float = 10.0) -> None:
    """Wait at most ``timeout`` s for ``minimum`` nodes, logging the count every ``every`` s.

    Raises
    ------
    TimeoutError
        If fewer than ``minimum`` nodes are connected when the time is up.
    """
    deadline = time.monotonic() + timeout
    next_log = time.monotonic()
    while (connected := len(list(grid.get_node_ids()))) < minimum:
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(
                f"only {connected} of min-nodes={minimum} nodes connected after node-wait="
                f"{timeout:g} s: start more SuperNodes (or lower min-nodes, or raise node-wait)"
            )
        if now >= next_log:
            log(
                WARNING,
                "waiting for nodes: %d of min-nodes=%d connected (giving up in %.0f s)",
                connected,
                minimum,
                deadline - now,
            )
            next_log = now + every
        time.sleep(min(1.0, max(deadline - now, 0.0)))


def run_folder(cfg: RunConfig) -> Path:
    """``output-dir/run-name``, refused unless it is a folder directly inside ``output-dir``."""
    out = Path(cfg.output_dir).expanduser().resolve()
    folder = (out / cfg.name).resolve()
    if folder.parent != out:
        raise ConfigError(
            f"run-name {cfg.name!r} must name a folder directly inside output-dir {out} "
            f"(it resolves to {folder})"
        )
    return folder


@dataclass(frozen=True)
class Warmup:
    """A dense warm-up's phase: its model operations, and which tier budgets β may train in it
    (None: every tier, each at its own budget)."""

    ops: ModelOps
    eligible: Callable[[float], bool] | None


def preflight(
    cfg: RunConfig,
) -> tuple[Path, ModelOps, tuple[TierProfile, ...], Warmup | None]:
    """Every check that can fail before round 1, run before the run folder is touched.

    The run folder stays inside ``output-dir``; an explicit ``data-dir`` exists; the tier profile
    strings parse; the model builds; the test split loads (unless ``test-eval`` is off, so a run
    that chooses settings never reads it); the validation split loads when ``val-size`` > 0.
    """
    folder = run_folder(cfg)
    if cfg.data_dir and not Path(cfg.data_dir).expanduser().is_dir():
        raise ConfigError(f"data-dir {cfg.data_dir!r} is not a folder (leave it empty to search)")
    try:
        profiles = run_profiles(cfg)
    except ValueError as err:
        raise ConfigError(f"bad tier profile: {err}") from err
    ops = ModelOps(cfg)
    test = len(ops.test_set()) if cfg.test_eval else 0
    val = len(ops.val_set()) if cfg.val_size else 0
    warmup = None
    if cfg.warmup_rounds:
        warm_ops = ops.sibling(warmup_config(cfg))
        # Read off the fresh models, before any round loads or resizes them.
        warmup = Warmup(warm_ops, covers_dense(ops, warm_ops) if whole_model(cfg) else None)
    if (
        warmup is not None
        and warmup.eligible is not None
        and not any(map(warmup.eligible, cfg.tiers))
    ):
        raise ConfigError(
            f"dense-warmup: no tier in tier-fractions={cfg.tier_fractions!r} can train the dense "
            "model (its factored sub-model runs fewer MACs than the dense one even at the "
            "largest β): add a tier of β = 1 with rank-fraction = 1, or leave dense-warmup at 0"
        )
    log(
        INFO,
        "preflight passed: %d test examples, %d validation examples, %d tier profiles",
        test,
        val,
        len(profiles),
    )
    return folder, ops, profiles, warmup


def covers_dense(ops: ModelOps, dense_ops: ModelOps) -> Callable[[float], bool]:
    """Which tier budgets β may train the dense model in a dense warm-up: those whose factored
    sub-model runs at least the dense model's forward MACs (the CNN at full rank: β = 1)."""
    factored = ops.initial_arrays()
    dense = dense_ops.forward_macs(dense_ops.initial_arrays(), 1.0)
    return lambda beta: ops.forward_macs(factored, beta) >= dense


def make_strategy(
    cfg: RunConfig,
    ops: ModelOps,
    state: dict[str, dict[str, np.ndarray]],
    profiles: Sequence[TierProfile] | None = None,
    eligible: Callable[[float], bool] | None = None,
) -> tuple[NestedFedAvg, ConfigRecord]:
    """The run's strategy and train config; ``state["arrays"]`` tracks the global arrays.

    ``ops`` are the model operations of the phase the strategy runs (a dense warm-up's, or the
    run's own). With ``eligible`` only nodes whose β passes it train, and there is no federated
    evaluation (the other tiers could not run the model): a dense warm-up's rounds.
    """

    def cost(beta: float) -> tuple[float, int, int]:
        """Forward MACs per example of tier β's local step (every pass) and its payload bytes,
        for the clock."""
        arrays = state["arrays"]
        nbytes = ops.payload_nbytes(arrays, beta)
        return ops.step_macs(arrays, beta), nbytes, nbytes

    policy: RoundPolicy = VirtualClockPolicy(
        profiles if profiles is not None else run_profiles(cfg),
        cost,
        cfg.local_epochs,
        cfg.seed,
        cfg.deadline,
        cfg.deadline_policy,
        steps=lambda beta, n, own: round_steps(cfg, n, own, ops.match_step_macs(beta)),
        batch_size=cfg.batch_size,
    )
    if eligible is not None:
        policy = EligibleOnly(policy, eligible)
    strategy = NestedFedAvg(
        ops.axes,
        cfg.clients_per_round,
        cfg.clients_per_eval if eligible is None else 0,
        cfg.seed,
        shapes_fn=ops.shapes,
        budget_fn=ops.method_budget,
        policy=policy,
        weight_cap=cfg.weight_cap,
        update_cap=cfg.update_cap,
        weight_floor=cfg.weight_floor,
        rule=Rule(cfg.aggregation, cfg.trim_fraction, cfg.clip_radius),
        tiers=cfg.tiers,
        lr_fn=lambda rnd: round_lr(cfg.lr, cfg.lr_schedule, rnd, cfg.num_rounds),
        query_timeout=cfg.query_timeout,
        plan=ops.plan,
    )
    # FjORD samples its width per batch from the tiers' widths (up to the client's own).
    train_config = ConfigRecord({P.BUDGET_GRID: [ops.method_budget(b) for b in cfg.tiers]})
    return strategy, train_config


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = load_run_config(context.run_config)
    tune_malloc()  # evaluation batches of 1000: 1.7-1.8x faster with memory kept (docs/results.md)
    folder, ops, profiles, warmup = preflight(cfg)
    # One writer per run folder: refused (naming the holder) while another process writes it.
    with FolderLock(folder, "ServerApp"), TierBoard(folder, cfg.tensorboard) as board:
        run_rounds(grid, cfg, folder, ops, profiles, warmup, board)


def run_rounds(
    grid: Grid,
    cfg: RunConfig,
    folder: Path,
    ops: ModelOps,
    profiles: tuple[TierProfile, ...],
    warmup: Warmup | None,
    board: TierBoard | None = None,
) -> None:
    """The run's rounds, recorded in ``folder`` (held by this process), and its summary.

    ``board`` also gets every row (TensorBoard events of the per-tier metrics, when enabled).
    """
    # A dense warm-up's rounds (and round 0, its initial model) run the warm-up method's operations.
    warm_ops = warmup.ops if warmup is not None else None

    def ops_at(rnd: int) -> ModelOps:
        return warm_ops if warm_ops is not None and in_warmup(cfg, rnd) else ops

    recorder = RunRecorder(folder, cfg.to_run_config(), resume=cfg.resume)
    for repair in recorder.repairs:
        log(WARNING, "resume: %s", repair)
    start_round = recorder.start_round
    log(INFO, "run folder: %s (starting after round %d)", folder, start_round)
    arrays = ops_at(start_round).initial_arrays()
    if recorder.initial_arrays is not None:
        # Keys, dtypes and shapes against the model before any round trains on them.
        check_arrays(folder / CHECKPOINT, recorder.initial_arrays, arrays, ops_at(start_round).axes)
        arrays = recorder.initial_arrays
    if start_round >= cfg.num_rounds:
        log(INFO, "all %d rounds are already done", cfg.num_rounds)
        return
    state = {"arrays": arrays}
    previous = recorder.rows()
    clock = {"virtual": previous[-1].get("virtual-clock", 0.0) if previous else 0.0}
    recorded_auto: set[int] = set()  # nodes whose automatic tier choice is in a row already
    # The run's strategy finds the nodes; a warm-up's strategy shares what it knows of them.
    strategy, train_config = make_strategy(cfg, ops, state, profiles)
    wait_for_nodes(grid, cfg.min_nodes, cfg.node_wait)
    strategy.discover(grid)
    if not strategy.nodes:
        raise RuntimeError("no node reported its tier; see the client logs")

    def evaluate_round(rnd: int) -> bool:
        return rnd % cfg.eval_every == 0 or rnd == cfg.num_rounds

    def on_round_end(round_log: RoundLog, new_arrays: dict[str, np.ndarray], start: float) -> None:
        rnd = round_log.server_round
        round_ops = ops_at(rnd)
        state["arrays"] = new_arrays
        clock["virtual"] += round_log.virtual_seconds
        row = {
            "round": rnd,
            "ranks": round_ops.ranks(new_arrays),
            "clients": round_log.clients,
            "rejected": [[int(n), reason] for n, reason in round_log.rejected],
            "eval-rejected": [[int(n), reason] for n, reason in round_log.eval_rejected],
            "valid-replies": round_log.valid_replies,
            "federated": round_log.federated,
            "shrunk": round_log.shrunk,
            "dropped": [int(n) for n in round_log.dropped],
            "virtual-seconds": round_log.virtual_seconds,
            "virtual-clock": clock["virtual"],
            "aggregate-seconds": round_log.aggregate_seconds,
            "train-seconds": round_log.train_seconds,
            "fed-eval-seconds": round_log.fed_eval_seconds,
            "train-start": round_log.train_start,
        }
        if round_ops is warm_ops:
            row["phase"] = f"warmup ({cfg.warmup_method})"  # tiers score warmup-method's models
        if not round_log.valid_replies:
            row["no-valid-reply"] = True
        new_auto = {n: r for n, r in strategy.auto_tiers.items() if n not in recorded_auto}
        if new_auto:
            # What devices with rank-fraction=auto measured, in the first row after they joined.
            row["auto-tier"] = {str(n): r for n, r in new_auto.items()}
            recorded_auto.update(new_auto)
        if evaluate_round(rnd):
            # The run's own tiers only: a claimed β costs no evaluation and names no row.
            betas = sorted(cfg.tiers)
            eval_start = time.perf_counter()
            if cfg.test_eval:
                row["tiers"] = round_ops.evaluate_tiers(new_arrays, betas)
            if cfg.val_size:
                row["val-tiers"] = round_ops.evaluate_val(new_arrays, betas)
            row["eval-seconds"] = time.perf_counter() - eval_start
            for key, what in (("tiers", "test"), ("val-tiers", "validation")):
                if key in row:
                    accs = ", ".join(
                        f"β={b}: {100 * m['accuracy']:.2f}%" for b, m in row[key].items()
                    )
                    log(INFO, "round %d %s accuracy: %s", rnd, what, accs)
        row["wall-seconds"] = time.perf_counter() - start
        recorder.record_round(rnd, new_arrays, row)
        if board is not None:
            board.add_row(row)

    rounds = {
        "timeout": cfg.round_timeout,
        "on_round_end": on_round_end,
        "evaluate_round": evaluate_round,
    }
    if warmup is not None and start_round < cfg.warmup_rounds:
        warm, warm_config = make_strategy(cfg, warmup.ops, state, profiles, warmup.eligible)
        warm.nodes, warm.auto_tiers = strategy.nodes, strategy.auto_tiers  # one view of the nodes
        log(
            INFO,
            "dense warm-up: rounds %d-%d train the dense model (%s)",
            start_round + 1,
            cfg.warmup_rounds,
            cfg.warmup_method,
        )
        arrays = warm.run(grid, arrays, cfg.warmup_rounds, warm_config, start_round, **rounds)
        start_round = cfg.warmup_rounds
    if warmup is not None and start_round == cfg.warmup_rounds:
        # The checkpoint of the warm-up's last round holds the dense model: factor it by SVD.
        arrays = factor_arrays(cfg, arrays)
        state["arrays"] = arrays
        log(
            INFO,
            "dense warm-up done: the dense model factored by SVD (ranks %s)",
            ops.ranks(arrays),
        )
    strategy.run(
        grid,
        arrays,
        cfg.num_rounds,
        train_config,
        start_round,
        shrink_fn=ops.shrink if ops.method.shrinks else None,
        shrink_every=cfg.shrink_every,
        shrink_after=cfg.warmup_rounds,
        **rounds,
    )
    rows = recorder.rows()
    table = write_summary(folder, rows, f"{cfg.name}: {cfg.method} {cfg.model} on {cfg.dataset}")
    plot_accuracy(folder, rows)
    log(INFO, "results in %s\n%s", folder, table)
