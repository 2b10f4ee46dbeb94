"""Tests for server.strategy.NestedFedAvg over an in-process fake grid running the ClientApp.

The fake grid hands every message straight to the handler functions of client/client_app.py
(``query``, ``train_fn``, ``evaluate_fn``) with a hand-built Flower Context, so a round runs the
real client code on a tiny random IDX dataset without Ray or a SuperLink.
"""

import numpy as np
import pytest
from flwr.app import ConfigRecord, MessageType

from client import client_app
from client.local_data import local_splits
from maestro_common.app import protocol as P
from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from maestro_common.app.protocol import CONFIG as CONFIG_KEY
from maestro_common.app.protocol import METRICS as METRICS_KEY
from maestro_common.app.protocol import from_record, to_record
from maestro_common.app.tiers import resolve_budget
from maestro_common.ml.prefix import budget_shapes, leading_block
from server.model_ops import ModelOps
from server.rounds import RoundLog
from server.strategy import NestedFedAvg
from tests.fakegrid import FakeGrid
from tests.server.strategy_setup import (
    FACTORED,
    NUM_TRAIN,
    assert_bit_equal,
    new_strategy,
    partition_nodes,
)

pytestmark = pytest.mark.usefixtures("task_identity")


# ----- (a) configure_train ------------------------------------------------------------------


def test_configure_train_sends_each_node_its_own_prefix(cfg, ops):
    nodes = partition_nodes(4)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = new_strategy(ops, cfg)
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
    nodes = partition_nodes(6)
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
    other = partition_nodes(6, first_id=17)
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
    grid = FakeGrid(partition_nodes(4), dense_cfg.to_run_config())
    strategy = new_strategy(dense_ops, dense_cfg)
    init = dense_ops.initial_arrays()
    messages = list(strategy.configure_train(1, to_record(init), ConfigRecord({}), grid))
    assert {strategy.nodes[m.metadata.dst_node_id].beta for m in messages} == set(cfg.tiers)
    for msg in messages:
        arrays = from_record(msg.content[ARRAYS_KEY])
        assert_bit_equal(arrays, init)


# ----- (b) full rounds ----------------------------------------------------------------------


def test_run_two_rounds_over_the_fake_grid(cfg, ops):
    nodes = partition_nodes(4)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = new_strategy(ops, cfg, clients_per_eval=4)
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
    assert_bit_equal(init, ops.initial_arrays())
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
    strategy = new_strategy(ops, cfg)
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
    nodes = partition_nodes(3)
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = new_strategy(shrink_ops, cfg)
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


def test_shrinking_runs_every_shrink_every_rounds(cfg, ops):
    shrink_ops = ModelOps(cfg.replace(shrink_eps=1e9))
    grid = FakeGrid(partition_nodes(3), cfg.to_run_config())
    calls = 0

    def shrink(arrays):
        nonlocal calls
        calls += 1
        return shrink_ops.shrink(arrays)

    logs: list[RoundLog] = []
    out = new_strategy(shrink_ops, cfg).run(
        grid,
        shrink_ops.initial_arrays(),
        num_rounds=4,
        train_config=ConfigRecord({}),
        shrink_fn=shrink,
        shrink_every=2,
        on_round_end=lambda log, arrays, start: logs.append(log),
    )
    assert [log.shrunk for log in logs] == [False, True, False, True]
    assert calls == 2
    assert shrink_ops.ranks(out) == dict.fromkeys(FACTORED, 1)


# ----- issue 12: round-wise lr and the nested objective on the client -----------------------


def test_configure_train_sends_the_rounds_lr_to_training_clients_only(cfg, ops):
    from maestro_common.ml.schedules import round_lr

    nodes = partition_nodes(4)
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
