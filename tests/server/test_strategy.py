"""Tests for server.strategy.NestedFedAvg over an in-process fake grid running the ClientApp.

The fake grid hands every message straight to the handler functions of client/client_app.py
(``query``, ``train_fn``, ``evaluate_fn``) with a hand-built Flower Context, so a round runs the
real client code on a tiny random IDX dataset without Ray or a SuperLink.
"""

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict

from client import client_app
from client.local_data import local_splits
from maestro_common.app import protocol as P
from maestro_common.app.config import RunConfig
from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from maestro_common.app.protocol import CONFIG as CONFIG_KEY
from maestro_common.app.protocol import METRICS as METRICS_KEY
from maestro_common.app.protocol import from_record, to_record
from maestro_common.app.tiers import resolve_budget
from maestro_common.ml.data import write_idx
from maestro_common.ml.index_sets import take_sub_model
from maestro_common.ml.prefix import budget_shapes, leading_block
from server.evaluation import ModelOps
from server.rounds import RoundLog
from server.strategy import NestedFedAvg
from tests.adversary import noise_train
from tests.fakegrid import FakeGrid, Handler

pytestmark = pytest.mark.usefixtures("task_identity")

NUM_TRAIN, NUM_TEST = 400, 100
FACTORED = {"conv2", "fc1", "fc2"}  # lenet5's factored layers (first conv and head stay dense)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped IDX sample: random images, labels 0..9."""
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", NUM_TRAIN), ("t10k", NUM_TEST)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), "u1"))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype("u1"))
    return str(folder)


@pytest.fixture(scope="module")
def cfg(data_dir):
    return RunConfig(
        model="lenet5",
        data_dir=data_dir,
        tier_fractions="0.25,0.5,1.0",
        batch_size=32,
        partitioning="iid",
        device="cpu",
        clients_per_round=4,
        max_test_examples=50,
    )


@pytest.fixture(scope="module")
def ops(cfg):
    return ModelOps(cfg)


def _partition_nodes(n: int, first_id: int = 1_000_003) -> dict[int, dict]:
    # Node ids unrelated to partition ids, as Flower draws them.
    return {first_id + 7919 * i: {"partition-id": i, "num-partitions": n} for i in range(n)}


def _strategy(ops: ModelOps, cfg: RunConfig, clients_per_eval: int = 0) -> NestedFedAvg:
    return NestedFedAvg(ops.axes, cfg.clients_per_round, clients_per_eval, cfg.seed)


def _copy(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _assert_bit_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


# ----- (a) configure_train ------------------------------------------------------------------


def test_configure_train_sends_each_node_its_own_prefix(cfg, ops):
    nodes = _partition_nodes(4)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = _strategy(ops, cfg)
    init = ops.initial_arrays()
    messages = list(strategy.configure_train(1, to_record(init), ConfigRecord({"extra": 3}), grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(nodes)
    global_shapes = {k: v.shape for k, v in init.items()}
    betas = set()
    for msg in messages:
        node = msg.metadata.dst_node_id
        assert msg.metadata.message_type == MessageType.TRAIN
        beta, tier = resolve_budget(nodes[node], cfg.tiers, cfg.shares, cfg.seed)
        assert (strategy.nodes[node].beta, strategy.nodes[node].tier) == (beta, tier)
        assert strategy.nodes[node].partition == nodes[node]["partition-id"]
        config = msg.content[CONFIG_KEY]
        assert config["rank-fraction"] == beta
        assert config["server-round"] == 1 and config["extra"] == 3
        arrays = from_record(msg.content[ARRAYS_KEY])
        expected = budget_shapes(global_shapes, ops.axes, beta)
        assert {k: v.shape for k, v in arrays.items()} == expected
        for key, arr in arrays.items():
            np.testing.assert_array_equal(arr, init[key][leading_block(arr.shape)])
        # Spot-check the rank axes by hand: u (out, R) axis 1; conv v (R, in, kh, kw) axis 0.
        k = {0.25: 30, 0.5: 60, 1.0: 120}[beta]
        assert arrays["fc1.u"].shape == (120, k) and arrays["fc1.v"].shape == (400, k)
        k = {0.25: 4, 0.5: 8, 1.0: 16}[beta]
        assert arrays["conv2.v"].shape == (k, 6, 5, 5) and arrays["conv2.u"].shape == (16, k)
        betas.add(beta)
    assert betas == set(cfg.tiers)  # 4 partitions, 3 equal shares: counts 2, 1, 1


def test_configure_train_samples_clients_per_round_by_partition(cfg, ops):
    nodes = _partition_nodes(6)
    strategy = NestedFedAvg(ops.axes, clients_per_round=2, seed=cfg.seed)
    grid = FakeGrid(nodes, cfg.to_run_config())
    record = to_record(ops.initial_arrays())
    picked = {
        rnd: sorted(
            nodes[m.metadata.dst_node_id]["partition-id"]
            for m in strategy.configure_train(rnd, record, ConfigRecord({}), grid)
        )
        for rnd in (1, 2, 3)
    }
    assert all(len(p) == 2 for p in picked.values())
    # Other node ids for the same partitions: the same partitions are picked.
    other = _partition_nodes(6, first_id=17)
    strategy2 = NestedFedAvg(ops.axes, clients_per_round=2, seed=cfg.seed)
    grid2 = FakeGrid(other, cfg.to_run_config())
    for rnd, parts in picked.items():
        msgs = strategy2.configure_train(rnd, record, ConfigRecord({}), grid2)
        assert sorted(other[m.metadata.dst_node_id]["partition-id"] for m in msgs) == parts
    # Discovery asked each node once only.
    assert len([m for m in grid.sent if m.metadata.message_type == MessageType.QUERY]) == 6


def test_dense_method_sends_every_node_the_whole_model(cfg):
    dense_cfg = cfg.replace(method="fedavg-all")
    dense_ops = ModelOps(dense_cfg)
    assert dense_ops.axes == {}
    grid = FakeGrid(_partition_nodes(4), dense_cfg.to_run_config())
    strategy = _strategy(dense_ops, dense_cfg)
    init = dense_ops.initial_arrays()
    messages = list(strategy.configure_train(1, to_record(init), ConfigRecord({}), grid))
    assert {strategy.nodes[m.metadata.dst_node_id].beta for m in messages} == set(cfg.tiers)
    for msg in messages:
        arrays = from_record(msg.content[ARRAYS_KEY])
        _assert_bit_equal(arrays, init)


# ----- (b) full rounds ----------------------------------------------------------------------


def test_run_two_rounds_over_the_fake_grid(cfg, ops):
    nodes = _partition_nodes(4)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = _strategy(ops, cfg, clients_per_eval=4)
    init = ops.initial_arrays()
    logs: list[RoundLog] = []
    out = strategy.run(
        grid,
        init,
        num_rounds=2,
        train_config=ConfigRecord({}),
        on_round_end=lambda log, arrays, start: logs.append(log),
    )
    assert [log.server_round for log in logs] == [1, 2]
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in init.items()}
    for key, arr in out.items():
        assert arr.dtype == init[key].dtype
        assert np.all(np.isfinite(arr)), key
    changed = [k for k in init if not np.array_equal(out[k], init[k])]
    assert set(changed) == set(init)  # every array was trained by someone
    # The initial arrays passed in are not modified.
    _assert_bit_equal(init, ops.initial_arrays())
    for log in logs:
        assert log.rejected == []
        assert len(log.clients) == 4
        parts = sorted(c["partition-id"] for c in log.clients)
        assert parts == [0, 1, 2, 3]
        for c in log.clients:
            assert c["num-examples"] > 0 and np.isfinite(c["train-loss"])
            assert c["rank-fraction"] == strategy.nodes[c["node-id"]].beta
            assert c["bytes-down"] == c["bytes-up"]  # the reply is the prefix it was sent
        # Federated evaluation on local splits: one entry per budget in use.
        assert set(log.federated) == {"0.25", "0.5", "1"}
        for m in log.federated.values():
            # Weighted by examples: accuracy × examples is the whole number of right answers.
            right = m["accuracy"] * m["num-examples"]
            assert m["num-examples"] > 0 and right == pytest.approx(round(right))
    # Smaller budgets download fewer bytes.
    by_beta = {c["rank-fraction"]: c["bytes-down"] for c in logs[-1].clients}
    assert by_beta[0.25] < by_beta[0.5] < by_beta[1.0]
    # The tiers the server evaluates centrally are finite too.
    tiers = ops.evaluate_tiers(out, cfg.tiers)
    assert set(tiers) == {"0.25", "0.5", "1"}
    assert all(np.isfinite(t["loss"]) for t in tiers.values())
    assert tiers["0.25"]["params"] < tiers["1"]["params"]


def test_local_splits_partition_the_training_set(cfg):
    seen = []
    for pid in range(4):
        train, val = local_splits(cfg, pid, 4)
        assert len(train) > 0 and len(val) > 0
        seen.append(len(train) + len(val))
    assert sum(seen) == NUM_TRAIN
    with pytest.raises(ValueError, match="partition-id"):
        local_splits(cfg, 4, 4)


def test_query_reports_tier_and_partition(cfg):
    grid = FakeGrid({5: {"partition-id": 2, "num-partitions": 3}}, cfg.to_run_config())
    grid.node_configs[6] = {"rank-fraction": 0.3}
    strategy = NestedFedAvg({}, 1)
    strategy.discover(grid)
    beta, tier = resolve_budget(grid.node_configs[5], cfg.tiers, cfg.shares, cfg.seed)
    assert (strategy.nodes[5].beta, strategy.nodes[5].tier, strategy.nodes[5].partition) == (
        beta,
        tier,
        2,
    )
    assert (strategy.nodes[6].beta, strategy.nodes[6].tier, strategy.nodes[6].partition) == (
        0.3,
        None,
        None,
    )
    strategy.discover(grid)  # known nodes are not asked again
    assert len(grid.sent) == 2


# ----- (c) bad replies --------------------------------------------------------------------


def _echo(corrupt: Callable[[dict, dict], None] | None = None) -> Handler:
    """A train handler that skips training: replies with the received arrays + 0.5."""

    def handler(msg: Message, context: Context) -> Message:
        arrays = {
            k: v + np.asarray(0.5, v.dtype) for k, v in from_record(msg.content[ARRAYS_KEY]).items()
        }
        metrics = {"num-examples": 10, "train-loss": 1.0}
        if corrupt is not None:
            corrupt(arrays, metrics)
        content = RecordDict({ARRAYS_KEY: to_record(arrays), METRICS_KEY: MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    return handler


def _nan(arrays, metrics):
    arrays["fc1.u"][0, 0] = np.nan


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
    (_nan, "non-finite"),
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
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=_echo())
    strategy = _strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == []
    assert len(strategy.round_log.clients) == 1
    np.testing.assert_allclose(out["fc1.u"][:, :60], init["fc1.u"][:, :60] + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out["fc1.u"][:, 60:], init["fc1.u"][:, 60:])  # not covered
    np.testing.assert_allclose(out["fc3.weight"], init["fc3.weight"] + 0.5, rtol=1e-6)


@pytest.mark.parametrize("corrupt,reason", BAD, ids=[c.__name__.strip("_") for c, _ in BAD])
def test_bad_reply_rejected_and_global_unchanged(cfg, ops, corrupt, reason):
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=_echo(corrupt))
    strategy = _strategy(ops, cfg)
    init = ops.initial_arrays()
    before = _copy(init)
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    log = strategy.round_log
    assert len(log.rejected) == 1
    node, why = log.rejected[0]
    assert node == 4242
    assert reason in why
    assert log.clients == []
    _assert_bit_equal(out, before)
    _assert_bit_equal(strategy.global_arrays, before)


def test_bad_reply_left_out_of_a_mixed_round(cfg, ops):
    nodes = {
        1: {"rank-fraction": 1.0, "partition-id": 0, "num-partitions": 2},
        2: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 2},
    }

    def train(msg, context):
        corrupt = _nan if context.node_id == 2 else None
        return _echo(corrupt)(msg, context)

    grid = FakeGrid(nodes, cfg.to_run_config(), train=train)
    strategy = _strategy(ops, cfg)
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
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=_echo(lambda a, m: m.update(lies)))
    strategy = _strategy(ops, cfg)
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
    nodes = _partition_nodes(3)
    liar = next(iter(nodes))

    def query(msg, context):
        reply = client_app.query(msg, context)
        if context.node_id == liar:
            reply.content[CONFIG_KEY]["rank-fraction"] = 5.0
        return reply

    grid = FakeGrid(nodes, cfg.to_run_config(), train=_echo())
    grid.handlers[MessageType.QUERY] = query
    strategy = _strategy(ops, cfg, clients_per_eval=3)
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

    grid = FakeGrid(nodes, cfg.to_run_config(), train=_echo())
    grid.handlers[MessageType.EVALUATE] = evaluate
    strategy = _strategy(ops, cfg, clients_per_eval=2)
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
    grid = FakeGrid(ONE_NODE, cfg.to_run_config(), train=_echo())
    strategy = _strategy(ops, cfg)
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
    strategy = _strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == [(4242, "client error: boom")]
    assert strategy.round_log.valid_replies == 0
    _assert_bit_equal(out, init)


# ----- (d) all full budget: plain weighted FedAvg ------------------------------------------


def test_full_budget_aggregate_is_weighted_fedavg(cfg, ops):
    weights = {11: 10, 22: 30, 33: 60}
    nodes = {
        node: {"rank-fraction": 1.0, "partition-id": i, "num-partitions": 3}
        for i, node in enumerate(weights)
    }

    def train(msg, context):
        reply = client_app.train_fn(msg, context)
        reply.content[METRICS_KEY]["num-examples"] = weights[context.node_id]
        return reply

    grid = FakeGrid(nodes, cfg.to_run_config(), train=train)
    strategy = _strategy(ops, cfg)
    init = ops.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    replies = [r for r in grid.replies if r.metadata.message_type == MessageType.TRAIN]
    assert len(replies) == 3 and strategy.round_log.rejected == []
    got = {r.metadata.src_node_id: from_record(r.content[ARRAYS_KEY]) for r in replies}
    for arrays in got.values():  # full budget: every reply carries the full shapes
        assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in init.items()}
    total = sum(weights.values())
    for key in init:
        expected = sum(weights[n] * got[n][key].astype(np.float64) for n in got) / total
        np.testing.assert_allclose(out[key], expected, rtol=1e-5, atol=1e-6, err_msg=key)
        assert out[key].dtype == init[key].dtype
    # The weights matter: the unweighted mean is measurably different.
    plain = sum(got[n]["fc1.u"].astype(np.float64) for n in got) / 3
    assert np.abs(out["fc1.u"] - plain).max() > 1e-5


# ----- (e) shrinking ----------------------------------------------------------------------


def test_shrink_with_huge_eps_reduces_every_factored_layer_to_rank_one(cfg, ops):
    shrink_ops = ModelOps(cfg.replace(shrink_eps=1e9))
    init = shrink_ops.initial_arrays()
    assert shrink_ops.ranks(init) == {"conv2": 16, "fc1": 120, "fc2": 84}
    shrunk = shrink_ops.shrink(init)
    assert shrink_ops.ranks(shrunk) == dict.fromkeys(FACTORED, 1)
    assert shrunk["conv2.v"].shape == (1, 6, 5, 5) and shrunk["conv2.u"].shape == (16, 1)
    assert shrunk["fc1.u"].shape == (120, 1) and shrunk["fc1.v"].shape == (400, 1)
    assert shrunk["fc2.u"].shape == (84, 1) and shrunk["fc2.v"].shape == (120, 1)
    # The kept component is the leading one, unchanged; dense arrays are untouched.
    np.testing.assert_array_equal(shrunk["fc1.u"], init["fc1.u"][:, :1])
    np.testing.assert_array_equal(shrunk["conv1.weight"], init["conv1.weight"])
    # eps = 0 keeps everything.
    keep_all = ModelOps(cfg.replace(shrink_eps=0.0))
    assert keep_all.ranks(keep_all.shrink(init)) == {"conv2": 16, "fc1": 120, "fc2": 84}


def test_shrunk_shapes_travel_in_the_next_round(cfg, ops):
    shrink_ops = ModelOps(cfg.replace(shrink_eps=1e9))
    nodes = _partition_nodes(3)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = _strategy(shrink_ops, cfg)
    logs: list[RoundLog] = []
    out = strategy.run(
        grid,
        shrink_ops.initial_arrays(),
        num_rounds=2,
        train_config=ConfigRecord({}),
        shrink_fn=shrink_ops.shrink,
        shrink_every=1,
        on_round_end=lambda log, arrays, start: logs.append(log),
    )
    assert [log.shrunk for log in logs] == [True, True]
    round1 = grid.sent_of(MessageType.TRAIN, 1)
    round2 = grid.sent_of(MessageType.TRAIN, 2)
    assert len(round1) == len(round2) == 3
    assert max(from_record(m.content[ARRAYS_KEY])["fc1.u"].shape[1] for m in round1) == 120
    for msg in round2:
        arrays = from_record(msg.content[ARRAYS_KEY])
        assert arrays["conv2.v"].shape == (1, 6, 5, 5)
        assert arrays["conv2.u"].shape == (16, 1)
        assert arrays["fc1.u"].shape == (120, 1) and arrays["fc1.v"].shape == (400, 1)
        assert arrays["fc2.u"].shape == (84, 1) and arrays["fc2.v"].shape == (120, 1)
    # Round 2's replies were accepted at the shrunk shapes.
    assert logs[1].rejected == [] and len(logs[1].clients) == 3
    assert shrink_ops.ranks(out) == dict.fromkeys(FACTORED, 1)
    assert all(np.all(np.isfinite(a)) for a in out.values())


def test_no_shrinking_until_shrink_after_is_over(cfg, ops):
    # A dense warm-up's rounds hold no ranks: shrinking starts with the first factored round.
    shrink_ops = ModelOps(cfg.replace(shrink_eps=1e9))
    grid = FakeGrid(_partition_nodes(3), cfg.to_run_config())
    calls = 0

    def shrink(arrays):
        nonlocal calls
        calls += 1
        return shrink_ops.shrink(arrays)

    logs: list[RoundLog] = []
    out = _strategy(shrink_ops, cfg).run(
        grid,
        shrink_ops.initial_arrays(),
        num_rounds=3,
        train_config=ConfigRecord({}),
        shrink_fn=shrink,
        shrink_every=1,
        shrink_after=2,
        on_round_end=lambda log, arrays, start: logs.append(log),
    )
    assert [log.shrunk for log in logs] == [False, False, True]
    assert calls == 1
    assert shrink_ops.ranks(out) == dict.fromkeys(FACTORED, 1)


def test_reply_from_a_node_not_sampled_this_round_is_refused(cfg, ops):
    nodes = _partition_nodes(6)
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
    before = _copy(strategy.global_arrays)
    strategy.round_log = RoundLog(2)
    strategy.aggregate_train(2, stale)
    assert {n for n, _ in strategy.round_log.rejected} == {r.metadata.src_node_id for r in stale}
    assert all("unsent node" in reason for _, reason in strategy.round_log.rejected)
    _assert_bit_equal(strategy.global_arrays, before)


# ----- (f) the influence bound ------------------------------------------------------------

SIX = {100 + i: {"rank-fraction": 1.0, "partition-id": i, "num-partitions": 6} for i in range(6)}


def _liar_round(cfg, ops, **caps):
    """One round: five honest echo nodes (+0.5, 10 examples) and partition 5 sending noise."""
    noise, echo = noise_train({5}, claim=1e9, scale=3.0), _echo()

    def train(msg, context):
        return (noise if context.node_config["partition-id"] == 5 else echo)(msg, context)

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


# ----- issue 12: round-wise lr and the nested objective on the client -----------------------


def test_configure_train_sends_the_rounds_lr_to_training_clients_only(cfg, ops):
    from maestro_common.ml.schedules import round_lr

    nodes = _partition_nodes(4)
    grid = FakeGrid(nodes, cfg.to_run_config())
    lr_fn = lambda rnd: round_lr(0.1, "cosine", rnd, 10)  # noqa: E731
    strategy = NestedFedAvg(ops.axes, cfg.clients_per_round, 4, cfg.seed, lr_fn=lr_fn)
    init = to_record(ops.initial_arrays())
    for rnd in (1, 6):
        for msg in strategy.configure_train(rnd, init, ConfigRecord({}), grid):
            assert msg.content[P.CONFIG][P.LR] == pytest.approx(lr_fn(rnd))
    assert lr_fn(6) < lr_fn(1)
    for msg in strategy.configure_evaluate(6, init, ConfigRecord({}), grid):
        assert P.LR not in msg.content[P.CONFIG]


def test_client_nested_sampler_cuts_the_received_prefix_at_the_tiers_fractions(cfg, ops):
    from maestro_common.lowrank.samplers import MaestroSampler, NestedSampler

    arrays = ops.initial_arrays()
    shapes = budget_shapes({k: v.shape for k, v in arrays.items()}, ops.axes, 0.5)
    received = {k: arrays[k][leading_block(s)] for k, s in shapes.items()}
    model, _, global_ranks = client_app._model_from(received, cfg, "cpu")
    task = P.Instruction(received, 1, 0.5, 0.5, (0.25, 0.5, 1.0))
    sampler = client_app._sampler(cfg, model, task, 0, global_ranks)
    assert isinstance(sampler, NestedSampler)
    assert sampler.caps == {"conv2": 8, "fc1": 60, "fc2": 42}  # the received prefix
    assert sampler.ranks_at(0.25) == {"conv2": 4, "fc1": 30, "fc2": 21}  # tier 0.25's model
    assert sampler.plan() == (True, [0.25])
    old = client_app._sampler(cfg.replace(objective="sampled"), model, task, 0, global_ranks)
    assert isinstance(old, MaestroSampler)


# ----- issue 30: the server's own tier indices and labels ------------------------------------


def test_a_nodes_tier_and_report_row_are_the_servers_not_its_claim(cfg, ops):
    nodes = {
        1: {"rank-fraction": 0.25, "partition-id": 0, "num-partitions": 3},
        2: {"rank-fraction": 0.2500001, "partition-id": 1, "num-partitions": 3},
        3: {"tier": 2, "partition-id": 2, "num-partitions": 3},
    }
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = NestedFedAvg(ops.axes, 3, 3, cfg.seed, tiers=cfg.tiers)
    strategy.discover(grid)
    assert {n: i.tier for n, i in strategy.nodes.items()} == {1: 0, 2: None, 3: 2}
    assert [strategy.tier_label(strategy.nodes[n].beta) for n in (1, 2, 3)] == [
        "0.25",
        "off-tier",
        "1",
    ]
    # Without the run's tiers (tests) a near-equal claim still gets a row of its own.
    bare = NestedFedAvg(ops.axes, 3, 3, cfg.seed)
    assert bare.tier_label(0.25) == "0.25" and bare.tier_label(0.2500001) == "0.2500001"
    assert bare.tier_label(1.0) == "1"


def test_a_sign_flipped_reply_is_left_out_and_its_row_says_so(cfg, ops):
    from server.aggregation import Rule

    def flipped(arrays, metrics):
        for key, value in arrays.items():
            if value.dtype.kind == "f":
                arrays[key] = value - np.asarray(1.5, value.dtype)  # received - 1, not + 0.5

    honest, liar = _echo(), _echo(flipped)

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


def _unchanged(corrupt: Callable[[dict, dict], None] | None = None) -> Handler:
    """A train handler that replies with exactly the arrays it received."""
    return _echo(lambda arrays, metrics: _minus_half(arrays, corrupt, metrics))


def _minus_half(arrays, corrupt, metrics):
    for key in arrays:
        arrays[key] = arrays[key] - np.asarray(0.5, arrays[key].dtype)
    if corrupt is not None:
        corrupt(arrays, metrics)


def _spectral_strategy(cfg) -> tuple[NestedFedAvg, ModelOps]:
    spectral = ModelOps(cfg.replace(method="spectral-unbiased"))
    strategy = NestedFedAvg(
        spectral.axes,
        cfg.clients_per_round,
        0,
        cfg.seed,
        shapes_fn=spectral.shapes,
        plan=spectral.plan,
    )
    return strategy, spectral


def test_an_index_plan_picks_records_and_places_each_nodes_components(cfg):
    """Sampled components travel gathered and scaled; a node that returns them untouched leaves
    the model's function unchanged (multipliers divided out, then re-factored)."""
    strategy, spectral = _spectral_strategy(cfg)
    nodes = {
        7: {"rank-fraction": 0.25, "partition-id": 0, "num-partitions": 2},
        8: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 2},
    }
    grid = FakeGrid(nodes, cfg.to_run_config(), train=_unchanged())
    init = spectral.initial_arrays()
    messages = list(strategy.configure_train(1, to_record(init), ConfigRecord({}), grid))
    by_node = {m.metadata.dst_node_id: from_record(m.content[ARRAYS_KEY]) for m in messages}
    weak, full = strategy._sent[7].sub, strategy._sent[8].sub
    assert full.is_prefix and not weak.is_prefix
    assert set(weak.indices) == {f"{n}.{f}" for n in FACTORED for f in "uv"}
    assert weak.shapes["fc1.u"] == (120, 30)  # as many components as the prefix at 0.25
    for key, arr in by_node[7].items():
        np.testing.assert_array_equal(arr, take_sub_model(init, weak)[key])
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == []
    for name in FACTORED:
        u, v = out[f"{name}.u"], out[f"{name}.v"]
        u0, v0 = init[f"{name}.u"], init[f"{name}.v"]
        if v.ndim == 4:  # conv: v is (R, in, kh, kw)
            v, v0 = v.reshape(v.shape[0], -1).T, v0.reshape(v0.shape[0], -1).T
        np.testing.assert_allclose(u @ v.T, u0 @ v0.T, atol=1e-4)


def test_a_reply_missing_some_of_its_components_is_refused(cfg):
    strategy, spectral = _spectral_strategy(cfg)
    nodes = {7: {"rank-fraction": 0.25, "partition-id": 0, "num-partitions": 1}}

    def drop_one(arrays, metrics):
        arrays["fc1.u"] = arrays["fc1.u"][:, :-1]

    grid = FakeGrid(nodes, cfg.to_run_config(), train=_unchanged(drop_one))
    init = spectral.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert [reason for _, reason in strategy.round_log.rejected] == [
        "'fc1.u': axis 1 holds 29 entries, but the node was sent 30 indices on it "
        "(shape (120, 29) vs sent (120, 30))"
    ]
    _assert_bit_equal(out, init)
