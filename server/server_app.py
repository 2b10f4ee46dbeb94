"""ServerApp: nested low-rank federated training across device tiers, with resume.

:func:`main` checks everything that can fail before round 1 (:func:`preflight`), holds the run
folder, and hands the rounds to a :class:`FederatedRun`: the strategy runs them, the run records
each one (its row, the global arrays) as it ends, so a crash loses no finished round.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from maestro_common.ml.schedules import round_lr
from server.aggregation import Rule
from server.model_ops import ModelOps
from server.policy import VirtualClockPolicy, run_profiles
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


def preflight(cfg: RunConfig) -> tuple[Path, ModelOps, tuple[TierProfile, ...]]:
    """Every check that can fail before round 1, run before the run folder is touched.

    The run folder stays inside ``output-dir``; an explicit ``data-dir`` exists; the tier profile
    strings parse; the model builds; the test split loads (unless ``test-eval`` is off, so a run
    that chooses settings never reads it); the validation split loads when ``val-size`` > 0.
    """
    if cfg.dense_warmup:
        raise ConfigError(
            f"dense-warmup={cfg.dense_warmup:g}: the dense warm-up is an option of the centralized "
            "trainer (python -m simulations.centralized) only; its federated forms lost and were "
            'removed (docs/results.md, "Variants measured"): leave dense-warmup at 0'
        )
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
    log(
        INFO,
        "preflight passed: %d test examples, %d validation examples, %d tier profiles",
        test,
        val,
        len(profiles),
    )
    return folder, ops, profiles


def make_strategy(
    cfg: RunConfig,
    ops: ModelOps,
    state: dict[str, dict[str, np.ndarray]],
    profiles: Sequence[TierProfile] | None = None,
) -> tuple[NestedFedAvg, ConfigRecord]:
    """The run's strategy and train config; ``state["arrays"]`` tracks the global arrays (the
    clock prices each round's payload from them)."""

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
    strategy = NestedFedAvg(
        ops.axes,
        cfg.clients_per_round,
        cfg.clients_per_eval,
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
        # An unanswered query is pulled again until then, not asked anew (discover).
        query_ttl=max(cfg.node_wait, cfg.query_timeout),
    )
    # FjORD samples its width per batch from the tiers' widths (up to the client's own).
    train_config = ConfigRecord({P.BUDGET_GRID: [ops.method_budget(b) for b in cfg.tiers]})
    return strategy, train_config


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = load_run_config(context.run_config)
    tune_malloc()  # evaluation batches of 1000: 1.7-1.8x faster with memory kept (docs/results.md)
    folder, ops, profiles = preflight(cfg)
    # One writer per run folder: refused (naming the holder) while another process writes it.
    with FolderLock(folder, "ServerApp"), TierBoard(folder, cfg.tensorboard) as board:
        FederatedRun(cfg, folder, ops, profiles, board).run(grid)


class FederatedRun:
    """The rounds of one run, recorded in its run folder (held by the caller), then its summary.

    Resumes after the folder's last finished round (``resume``); after every round it writes the
    round's row (clients, clock, ranks, and at evaluation rounds every tier's test and validation
    metrics) with the new global arrays, and hands the row to ``board`` (TensorBoard events,
    when enabled).
    """

    def __init__(
        self,
        cfg: RunConfig,
        folder: Path,
        ops: ModelOps,
        profiles: tuple[TierProfile, ...],
        board: TierBoard | None = None,
    ) -> None:
        self.cfg, self.folder, self.ops, self.board = cfg, folder, ops, board
        self.recorder = RunRecorder(folder, cfg.to_run_config(), resume=cfg.resume)
        for repair in self.recorder.repairs:
            log(WARNING, "resume: %s", repair)
        previous = self.recorder.rows()
        self.virtual_clock = previous[-1].get("virtual-clock", 0.0) if previous else 0.0
        self.recorded_auto: set[int] = set()  # nodes whose automatic tier is in a row already
        self.state = {"arrays": self._start_arrays()}
        self.strategy, self.train_config = make_strategy(cfg, ops, self.state, profiles)

    def _start_arrays(self) -> dict[str, np.ndarray]:
        """The fresh model's arrays, or the checkpoint's once checked against them."""
        arrays = self.ops.initial_arrays()
        saved = self.recorder.initial_arrays
        if saved is None:
            return arrays
        # Keys, dtypes and shapes against the model before any round trains on them.
        check_arrays(self.folder / CHECKPOINT, saved, arrays, self.ops.axes)
        return saved

    def run(self, grid: Grid) -> None:
        """Rounds ``start_round + 1 .. num-rounds`` on ``grid``, then the summary and plot."""
        cfg, start_round = self.cfg, self.recorder.start_round
        log(INFO, "run folder: %s (starting after round %d)", self.folder, start_round)
        if start_round >= cfg.num_rounds:
            log(INFO, "all %d rounds are already done", cfg.num_rounds)
            return
        wait_for_nodes(grid, cfg.min_nodes, cfg.node_wait)
        deadline = time.monotonic() + cfg.node_wait
        self.strategy.discover(grid)
        while self.strategy.unanswered and time.monotonic() < deadline:
            # Round 1 samples from the nodes known then, so it waits for every node's answer:
            # a run must not depend on how fast the machine started its clients. A simulated
            # client answers only once its worker has started (torch imported, data read),
            # which on a busy machine outlasts query-timeout.
            log(
                INFO,
                "%d nodes have not answered the tier query yet: waiting (node-wait)",
                self.strategy.unanswered,
            )
            # A query lives node-wait (its TTL): one that expires here is not asked again, as
            # the wait is over for its node (a later round asks it anew).
            self.strategy.discover(grid, reask=False)
        if not self.strategy.nodes:
            raise RuntimeError(
                f"no node reported its tier within node-wait ({cfg.node_wait:g} s); "
                "see the client logs"
            )
        self.strategy.run(
            grid,
            self.state["arrays"],
            cfg.num_rounds,
            self.train_config,
            start_round,
            timeout=cfg.round_timeout,
            shrink_fn=self.ops.shrink if self.ops.method.shrinks else None,
            shrink_every=cfg.shrink_every,
            on_round_end=self.end_round,
            evaluate_round=self.evaluates,
        )
        rows = self.recorder.rows()
        title = f"{cfg.name}: {cfg.method} {cfg.model} on {cfg.dataset}"
        table = write_summary(self.folder, rows, title)
        plot_accuracy(self.folder, rows)
        log(INFO, "results in %s\n%s", self.folder, table)

    def evaluates(self, rnd: int) -> bool:
        """Whether round ``rnd`` is evaluated (every ``eval-every`` rounds, and the last)."""
        return rnd % self.cfg.eval_every == 0 or rnd == self.cfg.num_rounds

    def end_round(self, round_log: RoundLog, arrays: dict[str, np.ndarray], start: float) -> None:
        """Record the round that just ended: its row and the new global arrays."""
        rnd = round_log.server_round
        self.state["arrays"] = arrays
        self.virtual_clock += round_log.virtual_seconds
        row = self._row(round_log, arrays)
        if self.evaluates(rnd):
            row.update(self._evaluation(rnd, arrays))
        row["wall-seconds"] = time.perf_counter() - start
        self.recorder.record_round(rnd, arrays, row)
        if self.board is not None:
            self.board.add_row(row)

    def _row(self, round_log: RoundLog, arrays: dict[str, np.ndarray]) -> dict:
        """The round's row without its evaluation: ranks, clients, replies, clock, timings."""
        row = {
            "round": round_log.server_round,
            "ranks": self.ops.ranks(arrays),
            "clients": round_log.clients,
            "rejected": [[int(n), reason] for n, reason in round_log.rejected],
            "eval-rejected": [[int(n), reason] for n, reason in round_log.eval_rejected],
            "valid-replies": round_log.valid_replies,
            "federated": round_log.federated,
            "shrunk": round_log.shrunk,
            "dropped": [int(n) for n in round_log.dropped],
            "virtual-seconds": round_log.virtual_seconds,
            "virtual-clock": self.virtual_clock,
            "aggregate-seconds": round_log.aggregate_seconds,
            "train-seconds": round_log.train_seconds,
            "fed-eval-seconds": round_log.fed_eval_seconds,
            "train-start": round_log.train_start,
        }
        if not round_log.valid_replies:
            row["no-valid-reply"] = True
        auto = self.strategy.auto_tiers
        new_auto = {n: r for n, r in auto.items() if n not in self.recorded_auto}
        if new_auto:
            # What devices with rank-fraction=auto measured, in the first row after they joined.
            row["auto-tier"] = {str(n): r for n, r in new_auto.items()}
            self.recorded_auto.update(new_auto)
        return row

    def _evaluation(self, rnd: int, arrays: dict[str, np.ndarray]) -> dict:
        """The run's own tiers scored on the test and validation splits (a claimed β costs no
        evaluation and names no row), and the seconds it took."""
        betas = sorted(self.cfg.tiers)
        start = time.perf_counter()
        scores: dict = {}
        if self.cfg.test_eval:
            scores["tiers"] = self.ops.evaluate_tiers(arrays, betas)
        if self.cfg.val_size:
            scores["val-tiers"] = self.ops.evaluate_val(arrays, betas)
        scores["eval-seconds"] = time.perf_counter() - start
        for key, what in (("tiers", "test"), ("val-tiers", "validation")):
            if key in scores:
                accs = ", ".join(
                    f"β={b}: {100 * m['accuracy']:.2f}%" for b, m in scores[key].items()
                )
                log(INFO, "round %d %s accuracy: %s", rnd, what, accs)
        return scores
