"""NestedFedAvg: FedAvg where every node trains the prefix of its own budget.

It extends Flower's FedAvg: ``configure_train`` builds one message per node carrying the leading
blocks of its budget; ``aggregate_train`` validates every reply against what that node was sent
and averages each coordinate over the replies that cover it (:mod:`server.aggregation`). The
strategy holds numpy arrays only: no torch, no architecture. What depends on the model (shrinking,
centralized evaluation, checkpoints) comes in as callables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from maestro_common.prefix import budget_shapes, take_prefix
from server.aggregation import aggregate_nested
from server.sampling import sample_nodes
from server.validation import Reply, filter_valid

ARRAYS_KEY, CONFIG_KEY, METRICS_KEY = "arrays", "config", "metrics"
Arrays = dict[str, np.ndarray]


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> Arrays:
    return {k: v.numpy() for k, v in record.items()}


@dataclass
class NodeInfo:
    """What the server knows of a node: its budget and (simulation) partition."""

    beta: float
    tier: int | None
    partition: int | None


class RoundPolicy:
    """Who may train in a round, at which budget, and whose reply counts (default: everyone).

    The simulation harness replaces it with a virtual-clock policy (availability, deadlines);
    the strategy itself knows nothing of time.
    """

    def available(self, server_round: int, node_id: int, info: NodeInfo) -> bool:
        return True

    def budget(self, server_round: int, node_id: int, info: NodeInfo) -> float:
        """The tier budget the node trains at this round (a deadline may lower it)."""
        return info.beta

    def admit(self, server_round: int, clients: list[dict[str, Any]]) -> tuple[set[int], float]:
        """Node ids whose replies count, and the round's virtual duration in seconds."""
        return {c["node-id"] for c in clients}, 0.0


@dataclass
class RoundLog:
    """What one round did, for the results file."""

    server_round: int
    clients: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    federated: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)  # stragglers past a deadline
    virtual_seconds: float = 0.0
    aggregate_seconds: float = 0.0
    train_seconds: float = 0.0  # from sending the train messages until the last reply
    shrunk: bool = False


class NestedFedAvg(FedAvg):
    """FedAvg over nested prefixes with per-node budgets.

    Parameters
    ----------
    prefix_axes:
        For each array key, the axes a budget cuts
        (see :func:`maestro_common.prefix.budget_shapes`).
    clients_per_round, clients_per_eval:
        Nodes sampled for training / federated evaluation each round (by partition id).
    seed:
        Seed of the node sampling.
    shapes_fn:
        ``shapes_fn(global_shapes, beta)``: the array shapes of the sub-model of tier budget β.
        Default: ``budget_shapes`` over ``prefix_axes`` (rank prefixes).
    budget_fn:
        Maps a tier budget to the method's own budget sent to the client as ``budget`` (a width
        for the width baselines). Default: identity.
    policy:
        Availability, per-round budget and admission of replies (see :class:`RoundPolicy`).
    lr_fn:
        ``lr_fn(server_round)``: the learning rate sent to training clients as ``lr`` (the
        round-wise schedule); None sends none (clients use the run config's ``lr``).
    """

    def __init__(
        self,
        prefix_axes: Mapping[str, tuple[int, ...]],
        clients_per_round: int,
        clients_per_eval: int = 0,
        seed: int = 0,
        min_available_nodes: int = 2,
        shapes_fn: Callable[[dict[str, tuple[int, ...]], float], dict[str, tuple[int, ...]]]
        | None = None,
        budget_fn: Callable[[float], float] | None = None,
        policy: RoundPolicy | None = None,
        lr_fn: Callable[[int], float] | None = None,
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0 if clients_per_eval else 0.0,
            min_train_nodes=1,
            min_available_nodes=min_available_nodes,
            weighted_by_key="num-examples",
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
        )
        self.prefix_axes = dict(prefix_axes)
        self.clients_per_round = clients_per_round
        self.clients_per_eval = clients_per_eval
        self.seed = seed
        self.lr_fn = lr_fn
        self.shapes_fn = shapes_fn or (
            lambda shapes, beta: budget_shapes(shapes, self.prefix_axes, beta)
        )
        self.budget_fn = budget_fn or (lambda beta: beta)
        self.policy = policy or RoundPolicy()
        self.nodes: dict[int, NodeInfo] = {}
        self.global_arrays: Arrays = {}
        self._sent: dict[int, dict[str, tuple[int, ...]]] = {}
        self._bytes_down: dict[int, int] = {}
        self.round_log = RoundLog(0)

    # ----- nodes ---------------------------------------------------------------------------
    def discover(self, grid: Grid, timeout: float = 60.0) -> None:
        """Ask every node not yet known for its budget (a QUERY message answered by the client)."""
        new = [n for n in grid.get_node_ids() if n not in self.nodes]
        if not new:
            return
        msgs = [
            Message(
                RecordDict({CONFIG_KEY: ConfigRecord({})}),
                dst_node_id=n,
                message_type=MessageType.QUERY,
            )
            for n in new
        ]
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "node %s did not report its tier: %s", node, reply.error.reason)
                continue
            info = reply.content[CONFIG_KEY]
            beta = float(info["rank-fraction"])
            tier = int(info["tier"])
            part = int(info["partition-id"])
            self.nodes[node] = NodeInfo(
                beta, None if tier < 0 else tier, None if part < 0 else part
            )
        log(
            INFO,
            "nodes known: %d; budgets: %s",
            len(self.nodes),
            sorted({n.beta for n in self.nodes.values()}),
        )

    def _sample(self, server_round: int, k: int, purpose: int) -> list[int]:
        partitions = {
            n: info.partition
            for n, info in self.nodes.items()
            if purpose != 0 or self.policy.available(server_round, n, info)
        }
        return sample_nodes(partitions, k, self.seed, server_round, purpose)

    def _messages(
        self, node_ids: Iterable[int], config: ConfigRecord, server_round: int, message_type: str
    ) -> list[Message]:
        shapes = {k: tuple(v.shape) for k, v in self.global_arrays.items()}
        messages = []
        for node in node_ids:
            info = self.nodes[node]
            beta = (
                self.policy.budget(server_round, node, info)
                if message_type == MessageType.TRAIN
                else info.beta
            )
            budget = self.shapes_fn(shapes, beta)
            self._sent[node] = budget
            node_config = ConfigRecord(dict(config))
            node_config["server-round"] = server_round
            node_config["rank-fraction"] = beta
            node_config["budget"] = float(self.budget_fn(beta))
            if self.lr_fn is not None and message_type == MessageType.TRAIN:
                node_config["lr"] = float(self.lr_fn(server_round))
            payload = take_prefix(self.global_arrays, budget)
            self._bytes_down[node] = int(sum(a.nbytes for a in payload.values()))
            content = RecordDict({ARRAYS_KEY: to_record(payload), CONFIG_KEY: node_config})
            messages.append(Message(content, dst_node_id=node, message_type=message_type))
        return messages

    # ----- training --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled node with the prefix of its own budget."""
        if not self.global_arrays:
            self.global_arrays = from_record(arrays)
        self.discover(grid)
        self._sent.clear()  # a reply counts only from a node sampled in this round
        nodes = self._sample(server_round, self.clients_per_round, purpose=0)
        log(INFO, "configure_train: %d of %d nodes", len(nodes), len(self.nodes))
        return self._messages(nodes, config, server_round, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, leave out the bad ones, then nested aggregation."""
        start = time.perf_counter()
        candidates: list[Reply] = []
        rejected: list[tuple[int, str]] = []
        metrics_by_node: dict[int, dict[str, Any]] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                rejected.append((node, f"client error: {msg.error.reason}"))
                log(WARNING, "node %s failed to train: %s", node, msg.error.reason)
                continue
            content = msg.content
            if node not in self._sent or ARRAYS_KEY not in content or METRICS_KEY not in content:
                rejected.append((node, "reply without arrays or metrics, or from an unsent node"))
                continue
            metrics = dict(content[METRICS_KEY])
            metrics_by_node[node] = metrics
            candidates.append(
                Reply(
                    node,
                    from_record(content[ARRAYS_KEY]),
                    metrics.get("num-examples"),
                    self._sent[node],
                )
            )
        accepted, bad = filter_valid(self.global_arrays, candidates)
        rejected += bad
        rows = [self._client_row(r.node_id, metrics_by_node[r.node_id]) for r in accepted]
        kept, virtual = self.policy.admit(server_round, rows)
        self.round_log.dropped = [r.node_id for r in accepted if r.node_id not in kept]
        self.round_log.virtual_seconds = virtual
        accepted = [r for r in accepted if r.node_id in kept]
        if accepted:
            self.global_arrays = aggregate_nested(
                self.global_arrays, [(r.arrays, float(r.num_examples)) for r in accepted]
            )
        else:
            log(WARNING, "round %d: no valid reply; the global model is kept", server_round)
        log_ = self.round_log
        log_.rejected = rejected
        log_.aggregate_seconds += time.perf_counter() - start
        log_.clients += rows  # stragglers too (marked by the policy): they cost a download
        total = sum(float(r.num_examples) for r in accepted)
        summary = MetricRecord({"num-accepted": len(accepted), "num-rejected": len(rejected)})
        if accepted:
            summary["train-loss"] = (
                sum(
                    float(metrics_by_node[r.node_id].get("train-loss", 0.0)) * float(r.num_examples)
                    for r in accepted
                )
                / total
            )
        return to_record(self.global_arrays), summary

    def _client_row(self, node: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        info = self.nodes[node]
        return {
            "node-id": node,
            "partition-id": info.partition,
            "tier-beta": info.beta,
            "bytes-down": self._bytes_down[node],
            **metrics,
        }

    # ----- federated evaluation -------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.clients_per_eval:
            return []
        nodes = self._sample(server_round, self.clients_per_eval, purpose=1)
        return self._messages(nodes, config, server_round, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Example-weighted accuracy and loss per budget on the clients' local splits."""
        sums: dict[float, list[float]] = {}
        for msg in replies:
            if msg.has_error() or METRICS_KEY not in msg.content:
                continue
            m = msg.content[METRICS_KEY]
            n = float(m.get("num-examples", 0))
            if not np.isfinite(n) or n <= 0:
                continue
            beta = self.nodes[msg.metadata.src_node_id].beta
            s = sums.setdefault(beta, [0.0, 0.0, 0.0])
            s[0] += n
            s[1] += n * float(m["eval-accuracy"])
            s[2] += n * float(m["eval-loss"])
        self.round_log.federated = {
            f"{beta:g}": {"accuracy": a / n, "loss": lo / n, "num-examples": n}
            for beta, (n, a, lo) in sorted(sums.items())
        }
        if not sums:
            return None
        return MetricRecord(
            {f"fed-accuracy-{k}": v["accuracy"] for k, v in self.round_log.federated.items()}
        )

    # ----- the rounds -------------------------------------------------------------------------
    def run(
        self,
        grid: Grid,
        initial_arrays: Arrays,
        num_rounds: int,
        train_config: ConfigRecord,
        start_round: int = 0,
        timeout: float = 3600.0,
        shrink_fn: Callable[[Arrays], Arrays] | None = None,
        shrink_every: int = 0,
        on_round_end: Callable[[RoundLog, Arrays, float], None] | None = None,
        evaluate_round: Callable[[int], bool] = lambda rnd: True,
    ) -> Arrays:
        """Run rounds ``start_round+1 .. num_rounds``; ``on_round_end`` checkpoints each one.

        Unlike FedAvg.start this keeps numpy arrays between rounds, applies server-side
        shrinking every ``shrink_every`` rounds, and can resume after a finished round.
        Federated evaluation runs on the rounds where ``evaluate_round(rnd)`` is true.
        """
        self.global_arrays = {k: np.array(v) for k, v in initial_arrays.items()}
        for rnd in range(start_round + 1, num_rounds + 1):
            round_start = time.perf_counter()
            log(INFO, "[ROUND %d/%d]", rnd, num_rounds)
            self.round_log = RoundLog(rnd)
            record = to_record(self.global_arrays)
            train_start = time.perf_counter()
            replies = grid.send_and_receive(
                self.configure_train(rnd, record, ConfigRecord(dict(train_config)), grid),
                timeout=timeout,
            )
            self.round_log.train_seconds = time.perf_counter() - train_start
            _, summary = self.aggregate_train(rnd, replies)
            log(INFO, "round %d: %s", rnd, summary)
            if shrink_fn is not None and shrink_every and rnd % shrink_every == 0:
                self.global_arrays = shrink_fn(self.global_arrays)
                self.round_log.shrunk = True
            if self.clients_per_eval and evaluate_round(rnd):
                eval_replies = grid.send_and_receive(
                    self.configure_evaluate(rnd, record, ConfigRecord(dict(train_config)), grid),
                    timeout=timeout,
                )
                self.aggregate_evaluate(rnd, eval_replies)
            if on_round_end is not None:
                on_round_end(self.round_log, self.global_arrays, round_start)
        return self.global_arrays
