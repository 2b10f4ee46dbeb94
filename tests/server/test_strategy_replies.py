"""Tests of the replies NestedFedAvg refuses or bounds: broken contracts, stale and repeated
replies, a liar's claimed examples and a sign-flipped update (over the fake grid running the
ClientApp, as in test_strategy.py)."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType

from client import client_app
from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from maestro_common.app.protocol import CONFIG as CONFIG_KEY
from maestro_common.app.protocol import METRICS as METRICS_KEY
from maestro_common.app.protocol import from_record, to_record
from server.rounds import RoundLog
from server.strategy import NestedFedAvg
from tests.adversary import noise_train
from tests.fakegrid import FakeGrid
from tests.server.strategy_setup import (
    assert_bit_equal,
    copy_arrays,
    echo,
    nan_entry,
    new_strategy,
    partition_nodes,
)

pytestmark = pytest.mark.usefixtures("task_identity")


# ----- (c) bad replies --------------------------------------------------------------------


def _inf(arrays, metrics):
    arrays["fc3.bias"][1] = np.inf


def _oversize(arrays, metrics):
    # Fits the global fc1.u (120, 120) but not this node's budget (120, 60).
    arrays["fc1.u"] = np.ones((120, arrays["fc1.u"].shape[1] + 1), np.float32)


def _beyond_global(arrays, metrics):
    arrays["conv1.bias"] = np.ones(7, np.float32)  # global (6,)


def _missing(arrays, metrics):
    del arrays["fc2.v"]


def _unknown(arrays, metrics):
    arrays["fc9.w"] = np.ones(3, np.float32)


def _zero_examples(arrays, metrics):
    metrics["num-examples"] = 0


def _negative_examples(arrays, metrics):
    metrics["num-examples"] = -5


def _no_examples(arrays, metrics):
    del metrics["num-examples"]


def _int_arrays(arrays, metrics):
    arrays["fc2.bias"] = arrays["fc2.bias"].astype(np.int32)


def _no_loss(arrays, metrics):
    del metrics["train-loss"]


def _nan_loss(arrays, metrics):
    metrics["train-loss"] = float("nan")


def _list_metric(arrays, metrics):
    metrics["train-seconds"] = [1.0, 2.0]


def _huge_examples(arrays, metrics):
    metrics["num-examples"] = 1e12


BAD = [
    (nan_entry, "non-finite"),
    (_inf, "non-finite"),
    (_oversize, "budget"),
    (_beyond_global, "larger than the global"),
    (_missing, "missing keys: 'fc2.v'"),
    (_unknown, "unknown keys: 'fc9.w'"),
    (_zero_examples, "num-examples"),
    (_negative_examples, "num-examples"),
    (_no_examples, "num-examples"),
    (_int_arrays, "dtype"),
    (_no_loss, "missing 'train-loss'"),
    (_nan_loss, "'train-loss' must be a finite number"),
    (_list_metric, "'train-seconds' must be a finite number"),
    (_huge_examples, "num-examples must be in"),
]

ONE_NODE = {4242: {"rank-fraction": 0.5, "partition-id": 0, "num-partitions": 1}}


def test_echo_reply_is_accepted_and_changes_the_model(cfg, ops):
    """The control for the rejection tests: an honest reply does move the global arrays."""
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=echo())
    strategy = new_strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == []
    assert len(strategy.round_log.clients) == 1
    np.testing.assert_allclose(out["fc1.u"][:, :60], init["fc1.u"][:, :60] + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out["fc1.u"][:, 60:], init["fc1.u"][:, 60:])  # not covered
    np.testing.assert_allclose(out["fc3.weight"], init["fc3.weight"] + 0.5, rtol=1e-6)


@pytest.mark.parametrize("corrupt,reason", BAD, ids=[c.__name__.strip("_") for c, _ in BAD])
def test_bad_reply_rejected_and_global_unchanged(cfg, ops, corrupt, reason):
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=echo(corrupt))
    strategy = new_strategy(ops, cfg)
    init = ops.initial_arrays()
    before = copy_arrays(init)
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    log = strategy.round_log
    assert len(log.rejected) == 1
    node, why = log.rejected[0]
    assert node == 4242
    assert reason in why
    assert log.clients == []
    assert_bit_equal(out, before)
    assert_bit_equal(strategy.global_arrays, before)


def test_bad_reply_left_out_of_a_mixed_round(cfg, ops):
    nodes = {
        1: {"rank-fraction": 1.0, "partition-id": 0, "num-partitions": 2},
        2: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 2},
    }

    def train(msg, context):
        corrupt = nan_entry if context.node_id == 2 else None
        return echo(corrupt)(msg, context)

    grid = FakeGrid(nodes, cfg.to_run_config(), train=train)
    strategy = new_strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert [n for n, _ in strategy.round_log.rejected] == [2]
    assert [c["node-id"] for c in strategy.round_log.clients] == [1]
    for key in init:
        np.testing.assert_allclose(out[key], init[key] + 0.5, rtol=1e-6, atol=1e-7)


def test_server_facts_are_written_over_what_a_client_claims(cfg, ops):
    lies = {
        "node-id": 1,
        "partition-id": 99,
        "tier": 7,
        "tier-beta": 0.01,
        "rank-fraction": 0.01,
        "budget": 0.01,
        "bytes-down": 1,
        "bytes-up": 1,
    }
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=echo(lambda a, m: m.update(lies)))
    strategy = new_strategy(ops, cfg)
    strategy.run(grid, ops.initial_arrays(), 1, ConfigRecord({}))
    (row,) = strategy.round_log.clients
    sent = from_record(grid.sent_of(MessageType.TRAIN, 1)[0].content[ARRAYS_KEY])
    nbytes = sum(a.nbytes for a in sent.values())
    assert row["node-id"] == 4242 and row["partition-id"] == 0 and row["tier"] == 1
    assert row["tier-beta"] == row["rank-fraction"] == row["budget"] == 0.5
    assert row["bytes-down"] == row["bytes-up"] == nbytes  # the echo returns what it got
    assert row["num-examples"] == 10 and row["train-loss"] == 1.0  # the client's own metrics


def test_one_bad_reply_of_each_kind_never_ends_the_run(cfg, ops):
    """Two rounds where one node breaks a contract in each message kind; the others count."""
    nodes = partition_nodes(3)
    liar = next(iter(nodes))

    def query(msg, context):
        reply = client_app.query(msg, context)
        if context.node_id == liar:
            reply.content[CONFIG_KEY]["rank-fraction"] = 5.0
        return reply

    grid = FakeGrid(nodes, cfg.to_run_config(), train=echo())
    grid.handlers[MessageType.QUERY] = query
    strategy = new_strategy(ops, cfg, clients_per_eval=3)
    out = strategy.run(grid, ops.initial_arrays(), 2, ConfigRecord({}))
    assert liar not in strategy.nodes and len(strategy.nodes) == 2  # asked again, refused again
    assert len([m for m in grid.sent if m.metadata.dst_node_id == liar]) == 2
    assert strategy.round_log.valid_replies == 2
    assert all(np.all(np.isfinite(a)) for a in out.values())


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"eval-accuracy": None}, "missing 'eval-accuracy'"),
        ({"eval-accuracy": 1e6}, "eval-accuracy must be in [0, 1]"),
        ({"eval-accuracy": float("nan")}, "'eval-accuracy' must be a finite number"),
        ({"eval-loss": float("inf")}, "'eval-loss' must be a finite number"),
    ],
)
def test_bad_evaluate_reply_is_left_out_of_the_federated_metrics(cfg, ops, change, reason):
    nodes = {
        1: {"rank-fraction": 1.0, "partition-id": 0, "num-partitions": 2},
        2: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 2},
    }

    def evaluate(msg, context):
        reply = client_app.evaluate_fn(msg, context)
        if context.node_id == 2:
            for key, value in change.items():
                if value is None:
                    del reply.content[METRICS_KEY][key]
                else:
                    reply.content[METRICS_KEY][key] = value
        return reply

    grid = FakeGrid(nodes, cfg.to_run_config(), train=echo())
    grid.handlers[MessageType.EVALUATE] = evaluate
    strategy = new_strategy(ops, cfg, clients_per_eval=2)
    strategy.run(grid, ops.initial_arrays(), 1, ConfigRecord({}))
    log = strategy.round_log
    assert [n for n, _ in log.eval_rejected] == [2] and reason in log.eval_rejected[0][1]
    honest = next(
        r
        for r in grid.replies
        if r.metadata.message_type == MessageType.EVALUATE and r.metadata.src_node_id == 1
    )
    assert log.federated["1"]["accuracy"] == honest.content[METRICS_KEY]["eval-accuracy"]
    assert log.federated["1"]["num-examples"] == honest.content[METRICS_KEY]["num-examples"]


def test_a_second_reply_from_the_same_node_is_refused(cfg, ops):
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=echo())
    strategy = new_strategy(ops, cfg)
    strategy.global_arrays = ops.initial_arrays()
    record = to_record(strategy.global_arrays)
    replies = grid.send_and_receive(strategy.configure_train(1, record, ConfigRecord({}), grid))
    strategy.aggregate_train(1, replies * 2)
    assert strategy.round_log.valid_replies == 1
    assert strategy.round_log.rejected == [(4242, "second reply from the node this round")]


def test_client_error_reply_rejected(cfg, ops):
    def failing(msg, context):
        # What Flower hands the server when a ClientApp raised.
        return Message(Error(code=0, reason="boom"), reply_to=msg)

    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=failing)
    strategy = new_strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == [(4242, "client error: boom")]
    assert strategy.round_log.valid_replies == 0
    assert_bit_equal(out, init)


def test_reply_from_a_node_not_sampled_this_round_is_refused(cfg, ops):
    nodes = partition_nodes(6)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = NestedFedAvg(ops.axes, 2, 0, cfg.seed)
    strategy.global_arrays = ops.initial_arrays()
    record = to_record(strategy.global_arrays)
    first = list(strategy.configure_train(1, record, ConfigRecord({}), grid))
    old_replies = grid.send_and_receive(first)
    second = list(strategy.configure_train(2, record, ConfigRecord({}), grid))
    now = {m.metadata.dst_node_id for m in second}
    stale = [r for r in old_replies if r.metadata.src_node_id not in now]
    assert stale, "pick a seed where round 2 samples other nodes than round 1"
    before = copy_arrays(strategy.global_arrays)
    strategy.round_log = RoundLog(2)
    strategy.aggregate_train(2, stale)
    assert {n for n, _ in strategy.round_log.rejected} == {r.metadata.src_node_id for r in stale}
    assert all("unsent node" in reason for _, reason in strategy.round_log.rejected)
    assert_bit_equal(strategy.global_arrays, before)


# ----- (f) the influence bound ------------------------------------------------------------

SIX = {100 + i: {"rank-fraction": 1.0, "partition-id": i, "num-partitions": 6} for i in range(6)}


def _liar_round(cfg, ops, **caps):
    """One round: five honest echo nodes (+0.5, 10 examples) and partition 5 sending noise."""
    noise, honest = noise_train({5}, claim=1e9, scale=3.0), echo()

    def train(msg, context):
        return (noise if context.node_config["partition-id"] == 5 else honest)(msg, context)

    grid = FakeGrid(SIX, cfg.to_run_config(), train=train)
    strategy = NestedFedAvg(ops.axes, 6, 0, cfg.seed, **caps)
    init = ops.initial_arrays()
    return strategy, init, strategy.run(grid, init, 1, ConfigRecord({}))


def test_a_liar_claiming_1e9_examples_cannot_own_the_average(cfg, ops):
    strategy, init, out = _liar_round(cfg, ops)
    rows = {c["partition-id"]: c for c in strategy.round_log.clients}
    assert rows[5]["num-examples"] == 1e9  # the claim is recorded as the client's...
    assert rows[5]["weight"] == 2 * 10  # ...but it weighs 2 × the round's median
    assert 0 < rows[5]["update-scale"] < 1 and rows[0]["update-scale"] == 1.0
    # Its share is 20 / 70 and its update's RMS at most 2 × 0.5, so the RMS of the global
    # model's deviation from the honest average is at most 20/70 · (1.0 + 0.5).
    squares = sum(float(np.square(out[k] - init[k] - 0.5).sum()) for k in init)
    rms = np.sqrt(squares / sum(a.size for a in init.values()))
    assert 0 < rms <= 20 / 70 * 1.5
    # The same round without the caps hands the model to the liar: it is its noise.
    _, init, unbounded = _liar_round(cfg, ops, weight_cap=0.0, update_cap=0.0)
    assert max(float(np.abs(unbounded[k] - init[k] - 0.5).max()) for k in init) > 5.0


# ----- the aggregation rule -------------------------------------------------------------------


def test_a_sign_flipped_reply_is_left_out_and_its_row_says_so(cfg, ops):
    from server.aggregation import Rule

    def flipped(arrays, metrics):
        for key, value in arrays.items():
            if value.dtype.kind == "f":
                arrays[key] = value - np.asarray(1.5, value.dtype)  # received - 1, not + 0.5

    honest, liar = echo(), echo(flipped)

    def train(msg, context):
        return (liar if context.node_config["partition-id"] == 5 else honest)(msg, context)

    grid = FakeGrid(SIX, cfg.to_run_config(), train=train)
    strategy = NestedFedAvg(ops.axes, 6, 0, cfg.seed, rule=Rule("centered-clip"))
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    rows = {c["partition-id"]: c for c in strategy.round_log.clients}
    assert rows[5]["aggregation-scale"] == 0.0
    assert all(rows[p]["aggregation-scale"] == 1.0 for p in range(5))
    for key in init:
        if init[key].dtype.kind == "f":
            np.testing.assert_allclose(out[key], init[key] + 0.5, rtol=1e-5, atol=1e-6)
