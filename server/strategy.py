"""NestedFedAvg: federated averaging where every node trains the prefix of its own budget.

A Flower :class:`~flwr.serverapp.strategy.Strategy`: ``configure_train`` builds one message per node
carrying the leading blocks of its budget (or, with an index plan, the slices the plan picks for
it: :mod:`maestro_common.ml.index_sets`); ``aggregate_train`` reads every reply through the
train-reply contract (:mod:`server.replies`), validates its arrays against what that
node was sent (:mod:`server.validation`), bounds its influence (:mod:`server.influence`) and
averages each coordinate over the replies that cover it (:mod:`server.aggregation`). A reply that
breaks any of these is left out with its reason; no single reply can end the round. The strategy
holds numpy arrays only: no torch, no architecture. What depends on the model (shrinking,
centralized evaluation, checkpoints) comes in as callables.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from maestro_common.app import protocol as P
from maestro_common.app.device_report import decode_auto_tier
from maestro_common.app.protocol import Rejected, TrainReply, from_record, to_record
from maestro_common.ml.index_sets import IndexPlan, SubModel, prefix_sub_model, take_sub_model
from maestro_common.ml.prefix import budget_shapes, payload_nbytes
from server.aggregation import MEAN, Rule, aggregate_nested
from server.influence import cap_weights, clip_updates
from server.messaging import collect, push, send_and_receive
from server.replies import read_eval_replies, read_train_replies, tier_means
from server.rounds import NodeInfo, RoundLog, RoundPolicy
from server.sampling import sample_nodes
from server.validation import Reply, bound_metrics, filter_valid

Arrays = dict[str, np.ndarray]
OFF_TIER = "off-tier"  # the federated report's row of nodes whose β is none of the run's tiers
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Sent:
    """What the server sent one node this round: the server's own facts about its reply."""

    shapes: Shapes
    beta: float  # the tier budget it trains at (a deadline may lower it below the node's)
    budget: float  # the method's budget at beta
    bytes_down: int
    sub: SubModel | None = None  # its index sets (None: the leading blocks of ``shapes``)


class NestedFedAvg(Strategy):
    """Federated averaging over nested prefixes with per-node budgets.

    Parameters
    ----------
    prefix_axes:
        For each array key, the axes a budget cuts
        (see :func:`maestro_common.ml.prefix.budget_shapes`).
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
    weight_cap, update_cap:
        The influence bound (:mod:`server.influence`): a reply weighs at most ``weight_cap``
        times the round's low median num-examples, and its update's RMS is scaled to at most
        ``update_cap`` times the round's reference update RMS. 0 turns a cap off.
    weight_floor:
        A reply weighs at least ``weight_floor`` times the round's low median num-examples.
    rule:
        How float coordinates are combined (:class:`server.aggregation.Rule`; default the
        weighted mean).
    tiers:
        The run's own tier budgets. A node's tier index and the rows of the federated report
        are the server's: the index of the node's β among ``tiers``, and ``f"{β:g}"`` of that
        configured β; a node whose β is none of them is reported under ``"off-tier"``. Empty
        (tests): each node's β is its own row, labelled by ``:g`` only where that reads back as
        the same number (else by ``repr``), so that no near-equal claim overwrites another row.
    lr_fn:
        ``lr_fn(server_round)``: the learning rate sent to training clients as ``lr`` (the
        round-wise schedule); None sends none (clients use the run config's ``lr``).
    query_timeout:
        Seconds the tier query waits for answers (:meth:`discover`): what a node that never
        answers adds to a round.
    query_ttl:
        Seconds a tier query stays at the SuperLink (its message's TTL). A query not answered
        within ``query_timeout`` stays pending: the next :meth:`discover` pulls its late answer
        instead of asking that node again, until the TTL ends it; then the node is asked anew.
    plan:
        How a training node's sub-model is picked as index sets
        (:class:`~maestro_common.ml.index_sets.IndexPlan`: a rolled window, sampled
        components); None: the leading blocks of ``shapes_fn`` (prefix methods). Federated
        evaluation always sends leading blocks, the sub-model the server evaluates per tier.
    """

    def __init__(
        self,
        prefix_axes: Mapping[str, tuple[int, ...]],
        clients_per_round: int,
        clients_per_eval: int = 0,
        seed: int = 0,
        shapes_fn: Callable[[Shapes, float], Shapes] | None = None,
        budget_fn: Callable[[float], float] | None = None,
        policy: RoundPolicy | None = None,
        weight_cap: float = 2.0,
        update_cap: float = 2.0,
        lr_fn: Callable[[int], float] | None = None,
        weight_floor: float = 0.01,
        rule: Rule = MEAN,
        tiers: Sequence[float] = (),
        query_timeout: float = 30.0,
        plan: IndexPlan | None = None,
        query_ttl: float = 300.0,
    ) -> None:
        if weight_cap < 0 or update_cap < 0 or weight_floor < 0:
            raise ValueError(
                "weight_cap, update_cap and weight_floor must be ≥ 0, got "
                f"{weight_cap}, {update_cap}, {weight_floor}"
            )
        if weight_cap and weight_floor > weight_cap:
            raise ValueError(f"weight_floor {weight_floor} is above weight_cap {weight_cap}")
        self.prefix_axes = dict(prefix_axes)
        self.clients_per_round = clients_per_round
        self.clients_per_eval = clients_per_eval
        self.seed = seed
        self.lr_fn = lr_fn
        self.query_timeout = query_timeout
        self.query_ttl = query_ttl
        self._queries: dict[str, int] = {}  # tier queries pushed and not answered: id -> node
        # TTL of train and evaluate messages: run() sets its round timeout, after which a
        # straggler's message and late reply leave the SuperLink's store (None: Flower's 12 h).
        self.message_ttl: float | None = None
        self.plan = plan
        self.shapes_fn = shapes_fn or (
            lambda shapes, beta: budget_shapes(shapes, self.prefix_axes, beta)
        )
        self.budget_fn = budget_fn or (lambda beta: beta)
        self.policy = policy or RoundPolicy()
        self.weight_cap = weight_cap
        self.update_cap = update_cap
        self.weight_floor = weight_floor
        self.rule = rule
        self.tiers = tuple(float(t) for t in tiers)
        self.nodes: dict[int, NodeInfo] = {}
        self.auto_tiers: dict[int, dict[str, Any]] = {}  # nodes that chose their own tier
        self.global_arrays: Arrays = {}
        self._sent: dict[int, Sent] = {}  # this round's train messages
        self._eval_sent: dict[int, Sent] = {}  # this round's evaluate messages
        self.round_log = RoundLog(0)

    def summary(self) -> None:
        log(
            INFO,
            "NestedFedAvg: %d clients per round, %d per evaluation, weight in [%g, %g] × median, "
            "update cap %g, aggregation %s",
            self.clients_per_round,
            self.clients_per_eval,
            self.weight_floor,
            self.weight_cap,
            self.update_cap,
            self.rule,
        )

    # ----- nodes ---------------------------------------------------------------------------
    def discover(self, grid: Grid, timeout: float | None = None, reask: bool = True) -> None:
        """Ask every node not yet known for its budget (a QUERY message answered by the client).

        Waits at most ``timeout`` seconds (default ``query_timeout``). A reply that breaks the
        query contract, or none in time, leaves its node unknown; it never ends the run.

        A query still unanswered stays pending: the next call pulls it again instead of asking
        its node anew, so a late answer is used and the SuperLink can delete the message. (An
        unpulled message stays in the SuperLink's store until its TTL, and Flower's simulation
        engine scans that whole store for every node ten times a second: with 1,001 nodes,
        every stale query slowed every later round.) A node is asked anew once its query has
        expired (``query_ttl``) or its answer was refused; with ``reask=False`` such a node
        waits for the next call instead (a run waiting out node-wait gives each node one query).
        """
        ended: set[int] = set()
        if self._queries:  # late answers to earlier queries; expired ones come back as errors
            pending = set(self._queries.values())
            self._take_tier_replies(collect(grid, self._queries, 0))
            ended = pending - set(self._queries.values()) if not reask else set()
        asked = set(self._queries.values()) | ended
        new = [n for n in grid.get_node_ids() if n not in self.nodes and n not in asked]
        if not new and not self._queries:
            return
        if new:  # pending queries alone are pulled, not pushed again
            msgs = [
                Message(
                    P.encode_query(),
                    dst_node_id=n,
                    message_type=MessageType.QUERY,
                    ttl=self.query_ttl,
                )
                for n in new
            ]
            self._queries.update(push(grid, msgs))
        wait = self.query_timeout if timeout is None else timeout
        self._take_tier_replies(collect(grid, self._queries, wait))
        log(
            INFO,
            "nodes known: %d; budgets: %s",
            len(self.nodes),
            sorted({n.beta for n in self.nodes.values()}),
        )

    @property
    def unanswered(self) -> int:
        """How many tier queries are pending: pushed, not answered, not expired when last pulled."""
        return len(self._queries)

    def _take_tier_replies(self, replies: Iterable[Message]) -> None:
        """Record the budgets answered to pending tier queries; each answered query is done."""
        for reply in replies:
            node = self._queries.pop(reply.metadata.reply_to_message_id, None)
            if node is None or reply.metadata.src_node_id != node:
                continue  # answers no pending query of its node: ignored
            info = P.decode_tier_reply(reply)
            if isinstance(info, Rejected):
                log(WARNING, "node %s: tier reply refused: %s", node, info.reason)
                continue
            tier = self.tier_index(info.beta) if self.tiers else info.tier
            if tier != info.tier:
                log(
                    INFO,
                    "node %s: claims tier %s, its β=%r is tier %s of the run",
                    node,
                    info.tier,
                    info.beta,
                    tier,
                )
            self.nodes[node] = NodeInfo(info.beta, tier, info.partition)
            self._record_auto_tier(node, reply.content[P.CONFIG])

    def tier_index(self, beta: float) -> int | None:
        """The index of ``beta`` among the run's tiers (exact match), None if it is none."""
        return self.tiers.index(beta) if beta in self.tiers else None

    def tier_label(self, beta: float) -> str:
        """The report row of a node of budget β: the server's label, never the client's number."""
        if not self.tiers:
            short = f"{beta:g}"
            return short if float(short) == beta else repr(float(beta))
        index = self.tier_index(beta)
        return OFF_TIER if index is None else f"{self.tiers[index]:g}"

    def _record_auto_tier(self, node: int, info: Mapping[str, Any]) -> None:
        """Keep what a node measured to choose its own tier (rank-fraction=auto)."""
        try:
            report = decode_auto_tier(info)
        except ValueError as err:
            log(WARNING, "node %s: %s", node, err)
            return
        if report is not None:
            self.auto_tiers[node] = report
            log(INFO, "node %s chose β=%s itself", node, report["beta"])

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
        sent = self._sent if message_type == MessageType.TRAIN else self._eval_sent
        sent.clear()  # a reply counts only from a node sent this kind of message this round
        messages = []
        nodes = list(node_ids)
        for node in nodes:
            info = self.nodes[node]
            beta = (
                self.policy.budget(server_round, node, info)
                if message_type == MessageType.TRAIN
                else info.beta
            )
            sub = prefix_sub_model(self.shapes_fn(shapes, beta))
            if self.plan is not None and message_type == MessageType.TRAIN:
                who = node if info.partition is None else info.partition
                draw = zlib.crc32(f"{self.seed}/{server_round}/{who}".encode())
                sub = self.plan.select(self.global_arrays, sub, server_round, draw, len(nodes))
                sub.check(shapes)
            budget = float(self.budget_fn(beta))
            payload = take_sub_model(self.global_arrays, sub)
            sent[node] = Sent(sub.shapes, beta, budget, payload_nbytes(payload), sub)
            extra = dict(config)
            if self.lr_fn is not None and message_type == MessageType.TRAIN:
                extra[P.LR] = float(self.lr_fn(server_round))  # the round-wise schedule
            content = P.encode_instruction(payload, server_round, beta, budget, extra)
            messages.append(
                Message(content, dst_node_id=node, message_type=message_type, ttl=self.message_ttl)
            )
        return messages

    # ----- training --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled node with the sub-model of its own budget: its leading
        blocks, or the index sets the plan picks for it."""
        if not self.global_arrays:
            self.global_arrays = from_record(arrays)
        self.discover(grid)
        nodes = self._sample(server_round, self.clients_per_round, purpose=0)
        log(INFO, "configure_train: %d of %d nodes", len(nodes), len(self.nodes))
        return self._messages(nodes, config, server_round, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Read and validate every reply, leave out the bad ones, bound, then nested average."""
        summary = self._aggregate(server_round, replies)
        return to_record(self.global_arrays), summary

    def _aggregate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        """:meth:`aggregate_train` into ``global_arrays``; returns the round's summary."""
        start = time.perf_counter()
        read, rejected = read_train_replies(replies, self._sent)
        candidates = [
            Reply(node, r.arrays, r.num_examples, self._sent[node].shapes, self._sent[node].sub)
            for node, r in read.items()
        ]
        accepted, bad = filter_valid(self.global_arrays, candidates)
        rejected += bad
        rows = {r.node_id: self._client_row(r.node_id, read[r.node_id]) for r in accepted}
        kept, virtual = self.policy.admit(server_round, list(rows.values()))
        self.round_log.dropped = [r.node_id for r in accepted if r.node_id not in kept]
        self.round_log.virtual_seconds = virtual
        accepted = [r for r in accepted if r.node_id in kept]
        weights = cap_weights(
            [float(r.num_examples) for r in accepted], self.weight_cap, self.weight_floor
        )
        subs = [self._sent[r.node_id].sub for r in accepted]
        arrays, scales = clip_updates(
            self.global_arrays, [r.arrays for r in accepted], self.update_cap, subs
        )
        for r, weight, scale in zip(accepted, weights, scales, strict=True):
            rows[r.node_id]["weight"] = weight
            rows[r.node_id]["update-scale"] = scale
        if accepted:
            clipped: dict[int, float] = {}
            self.global_arrays = aggregate_nested(
                self.global_arrays,
                list(zip(arrays, weights, strict=True)),
                self.rule,
                clipped,
                subs,
            )
            if self.plan is not None:
                # Re-expressed (same function) for the next round's selection, the evaluation
                # of the tiers' leading blocks and the checkpoint alike.
                self.global_arrays = self.plan.refresh(self.global_arrays, server_round)
            for i, scale in clipped.items():
                rows[accepted[i].node_id]["aggregation-scale"] = scale
                if scale == 0:
                    log(
                        WARNING,
                        "node %s: left out of the average: its update opposes the median's",
                        accepted[i].node_id,
                    )
        else:
            log(WARNING, "round %d: no valid reply; the global model is kept", server_round)
        log_ = self.round_log
        log_.rejected = rejected
        log_.valid_replies = len(accepted)
        log_.aggregate_seconds += time.perf_counter() - start
        log_.clients += rows.values()  # stragglers too (marked by the policy): they cost a download
        summary = MetricRecord({"num-accepted": len(accepted), "num-rejected": len(rejected)})
        if accepted:
            losses = [read[r.node_id].train_loss for r in accepted]
            summary["train-loss"] = float(np.average(losses, weights=weights))
        return summary

    def _client_row(self, node: int, reply: TrainReply) -> dict[str, Any]:
        """The client's metrics, then the server's own facts written over them."""
        info, sent = self.nodes[node], self._sent[node]
        metrics, dropped = bound_metrics(reply.metrics)
        if dropped:
            log(WARNING, "node %s: %s", node, dropped)
        return {
            **metrics,
            P.NODE_ID: node,
            P.PARTITION_ID: info.partition,
            P.TIER: info.tier,
            P.TIER_BETA: info.beta,
            P.RANK_FRACTION: sent.beta,
            P.BUDGET: sent.budget,
            P.BYTES_DOWN: sent.bytes_down,
            P.BYTES_UP: payload_nbytes(reply.arrays),
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
        """Example-weighted accuracy and loss per tier on the clients' local splits.

        Weights are the replies' num-examples clipped as train weights are
        (:func:`server.influence.cap_weights`); ``num-examples`` of a row is their sum. Rows are
        the server's tier labels (:meth:`tier_label`).

        Replies that break the evaluate-reply contract, come from a node not asked this round or
        repeat a node are left out (``round_log.eval_rejected``).
        """
        accepted, rejected = read_eval_replies(replies, self._eval_sent)
        # Weighted and capped as train replies are: a claim of 1e9 examples weighs 2 medians.
        weights = cap_weights(
            [r.num_examples for _, r in accepted], self.weight_cap, self.weight_floor
        )
        self.round_log.eval_rejected = rejected
        self.round_log.federated = tier_means(
            accepted, weights, lambda node: self.tier_label(self._eval_sent[node].beta)
        )
        if not self.round_log.federated:
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

        Unlike ``Strategy.start`` this keeps numpy arrays between rounds (no ``ArrayRecord`` is
        built: the strategy holds the global arrays), applies server-side shrinking every
        ``shrink_every`` rounds, and can resume after a finished round.
        Federated evaluation runs on the rounds where ``evaluate_round(rnd)`` is true.
        """
        self.global_arrays = {k: np.array(v) for k, v in initial_arrays.items()}
        self.message_ttl = timeout
        for rnd in range(start_round + 1, num_rounds + 1):
            round_start = time.perf_counter()
            log(INFO, "[ROUND %d/%d]", rnd, num_rounds)
            self.round_log = RoundLog(rnd)
            record = ArrayRecord()  # unread: the strategy holds the global arrays
            train_start = time.perf_counter()
            self.round_log.train_start = time.time()
            replies = send_and_receive(
                grid,
                self.configure_train(rnd, record, ConfigRecord(dict(train_config)), grid),
                timeout,
            )
            self.round_log.train_seconds = time.perf_counter() - train_start
            summary = self._aggregate(rnd, replies)
            log(INFO, "round %d: %s", rnd, summary)
            shrink_due = bool(shrink_every) and rnd % shrink_every == 0
            if shrink_fn is not None and shrink_due:
                self.global_arrays = shrink_fn(self.global_arrays)
                self.round_log.shrunk = True
            if self.clients_per_eval and evaluate_round(rnd):
                eval_start = time.perf_counter()
                eval_replies = send_and_receive(
                    grid,
                    self.configure_evaluate(rnd, record, ConfigRecord(dict(train_config)), grid),
                    timeout,
                )
                self.aggregate_evaluate(rnd, eval_replies)
                self.round_log.fed_eval_seconds = time.perf_counter() - eval_start
            if on_round_end is not None:
                on_round_end(self.round_log, self.global_arrays, round_start)
        return self.global_arrays
